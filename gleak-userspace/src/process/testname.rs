//! A test's name, read from its `testing.T` in the target.

use super::memory::ReadMemory;

/// Bytes of a test name read at most (Go's own names are far shorter).
pub const MAX_TEST_NAME: usize = 1024;

/// `t.name` of the `*testing.T` at `t_addr`, `name_offset` being where
/// `common.name` (a Go string: pointer, length) lies in a `testing.T`. `None`
/// when it cannot be read or is no plausible name: UTF-8, no control
/// characters, 1 to [`MAX_TEST_NAME`] bytes.
pub fn read_test_name(mem: &dyn ReadMemory, t_addr: u64, name_offset: u32) -> Option<String> {
    let header = t_addr.checked_add(u64::from(name_offset))?;
    let ptr = mem.read_u64(header).ok()?;
    let len = usize::try_from(mem.read_u64(header.checked_add(8)?).ok()?).ok()?;
    if ptr == 0 || len == 0 || len > MAX_TEST_NAME {
        return None;
    }
    let mut bytes = vec![0u8; len];
    mem.read(ptr, &mut bytes).ok()?;
    let name = String::from_utf8(bytes).ok()?;
    (!name.chars().any(char::is_control)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::memory::RecordedMemory;

    #[test]
    fn names_are_read_through_the_string_header_and_checked() {
        let mut mem = RecordedMemory::default();
        let t = 0xc000_1000;
        mem.insert_words(t + 288, &[0xc000_9000, 9]);
        mem.insert(0xc000_9000, b"TestA/sub");
        assert_eq!(read_test_name(&mem, t, 288).as_deref(), Some("TestA/sub"));
        // Unreadable T, a length past the bound, bytes that are no name.
        assert_eq!(read_test_name(&mem, 0xd000_0000, 288), None);
        let (too_long, not_a_name) = (0xc000_2000, 0xc000_3000);
        mem.insert_words(too_long + 288, &[0xc000_9000, MAX_TEST_NAME as u64 + 1]);
        assert_eq!(read_test_name(&mem, too_long, 288), None);
        mem.insert_words(not_a_name + 288, &[0xc000_a000, 2]);
        mem.insert(0xc000_a000, b"\x01\x02");
        assert_eq!(read_test_name(&mem, not_a_name, 288), None);
    }
}
