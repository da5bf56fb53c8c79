//! End-to-end: the page `gleak run --html FILE` writes, opened in a real
//! browser. Headless Chromium renders it as someone opening the CI artifact
//! would see it: the DOM it builds holds the chart of live goroutines per site,
//! the leak's `go` statement with its verdict and the flame graph of creation
//! stacks, and its screenshot is a drawn page, with the chart's colours, not a
//! blank one.
//!
//! Needs root, a Go toolchain, a release build of gleak (`cargo build
//! --release`, or set GLEAK_BIN) and Debian's `chromium` (`cargo xtask setup`
//! installs it through scripts/bootstrap.sh). A missing Chromium fails the test
//! even outside CI: there is no page check without a browser.

use std::collections::HashSet;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gleak::output::html::SERIES_COLORS;
use gleak_tests::*;

/// How long Chromium gets to load, render and dump or shoot a local page.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// The screenshot's size, in CSS pixels (and device pixels: no scaling).
const WINDOW: (u32, u32) = (1280, 1024);

/// Debian's Chromium, from PATH; panics when it is missing.
fn chromium() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|dir| dir.join("chromium")).find(|p| p.is_file()))
        .unwrap_or_else(|| {
            panic!(
                "`chromium` not found on PATH: the --html test opens gleak's page in headless Chromium; \
                 `cargo xtask setup` installs it (Debian package chromium, scripts/bootstrap.sh)"
            )
        })
}

/// A directory of its own for one test, removed when the test passes and kept
/// (and named on stderr) when it fails, for a look at the page.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("gleak-{what}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for inspection", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// What one Chromium run printed.
struct BrowserRun {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `page` with `args`, a profile of its own under
/// `scratch`, killing it (and panicking) after [`CHROMIUM_TIMEOUT`]. Panics if
/// it fails.
fn run_chromium(scratch: &Path, page: &Path, args: &[&str]) -> BrowserRun {
    let (stdout_path, stderr_path) = (scratch.join("chromium.stdout"), scratch.join("chromium.stderr"));
    let create = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
    let url = format!("file://{}", page.display());
    let mut child = Command::new(chromium())
        // gleak's tests run as root, where Chromium's sandbox refuses to start.
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check"])
        .arg(format!("--user-data-dir={}", scratch.join("chromium-profile").display()))
        // Colours as the page says them, whatever the machine's display profile.
        .args(["--force-color-profile=srgb", "--hide-scrollbars"])
        .args(args)
        .arg(&url)
        .stdin(Stdio::null())
        // Files, not pipes: Chromium's helper processes may outlive it holding them.
        .stdout(create(&stdout_path))
        .stderr(create(&stderr_path))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start chromium: {e}"));
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        match child.try_wait().expect("waiting for chromium") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let run = BrowserRun {
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    };
    match status {
        None => panic!(
            "chromium {} {url}: still running after {CHROMIUM_TIMEOUT:?}, killed it\n{}",
            args.join(" "),
            run.stderr
        ),
        Some(s) if !s.success() => panic!("chromium {} {url}: {s}\n{}", args.join(" "), run.stderr),
        Some(_) => run,
    }
}

/// The element of `dom` whose opening tag has `id="<id>"`, up to its closing
/// `</tag>` (Chromium serializes every SVG and HTML element with one).
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!("<{tag} id=\"{id}\"");
    let start = dom.find(&open).unwrap_or_else(|| panic!("no <{tag} id=\"{id}\"> in the page:\n{dom}"));
    let close = format!("</{tag}>");
    let end = dom[start..].find(&close).map_or(dom.len(), |i| start + i + close.len());
    &dom[start..end]
}

/// Decodes a PNG into 8-bit RGB pixels and its size.
fn rgb_pixels(png_path: &Path) -> (Vec<[u8; 3]>, u32, u32) {
    let file = File::open(png_path).unwrap_or_else(|e| panic!("no screenshot {}: {e}", png_path.display()));
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("{}: not a PNG: {e}", png_path.display()));
    let mut buf = vec![0; reader.output_buffer_size().expect("a screenshot fits in memory")];
    let info = reader.next_frame(&mut buf).unwrap_or_else(|e| panic!("{}: {e}", png_path.display()));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{}: a grey screenshot ({:?})", png_path.display(), info.color_type);
    let pixels = buf[..info.buffer_size()].chunks_exact(channels).map(|p| [p[0], p[1], p[2]]).collect();
    (pixels, info.width, info.height)
}

/// `gleak run --html` on a server leaking ~10 goroutines a second: the page it
/// leaves behind renders in Chromium with the chart, the leak and the flame graph.
#[test]
fn gleak_run_html_renders_in_chromium() {
    chromium(); // before anything else: a missing browser fails, root or not
    if !require_root() {
        return;
    }
    let tc = go_toolchains().pop().expect("a Go toolchain (scripts/bootstrap.sh installs them)");
    let fx = Fixture::build(&tc, "gate_forever");
    let line = fx.marker_line("LEAK:forever");
    let scratch = Scratch::new("html");
    let page = scratch.0.join("report.html");
    let page_arg = page.to_str().expect("a UTF-8 temporary directory");

    let run = {
        let _serial = serial_guard();
        run_gleak_run(&["--duration", "3s", "--json", "--html", page_arg], &fx.binary, &[])
    };
    assert_eq!(run.code(), Some(1), "{fx}: a leaking command fails the gate\n{run}");
    assert!(run.stderr.contains(&format!("wrote {page_arg}")), "{fx}: gleak does not say it wrote the page\n{run}");
    let reports = json_reports(&run);
    let last = reports.last().unwrap_or_else(|| panic!("{fx}: no report\n{run}"));
    let site = marker_site(last, &fx, "LEAK:forever")
        .unwrap_or_else(|| panic!("{fx}: no // LEAK:forever site\n{}\n{run}", describe_sites(last, 15)));
    assert_eq!(verdict(site), "leak", "{fx}: // LEAK:forever\n{site}\n{run}");
    // Written atomically: the page, and no temporary file beside it.
    let beside: Vec<String> = std::fs::read_dir(&scratch.0)
        .expect("the scratch directory")
        .map(|e| e.expect("a directory entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(beside, ["report.html"], "{fx}: files beside the page\n{run}");

    // The DOM as Chromium built it (no script on the page: this is the drawing).
    let dom = run_chromium(&scratch.0, &page, &["--dump-dom"]).stdout;
    let go_statement = format!("{}:{line}", fx.file_suffix());
    let chart = element(&dom, "svg", "live-chart");
    assert!(chart.contains("<polyline"), "{fx}: no line in the chart:\n{chart}");
    let table = element(&dom, "table", "sites");
    let leak_row = table
        .split("<tr")
        .find(|row| row.contains(&go_statement))
        .unwrap_or_else(|| panic!("{fx}: {go_statement} (// LEAK:forever) not in the table:\n{table}"));
    assert!(leak_row.contains("class=\"verdict leak\">leak<"), "{fx}: {go_statement} is not a leak:\n{leak_row}");
    let flamegraph = element(&dom, "svg", "flamegraph");
    assert!(flamegraph.contains("<rect"), "{fx}: an empty flame graph:\n{flamegraph}");
    assert!(flamegraph.contains(&go_statement), "{fx}: {go_statement} not in the flame graph:\n{flamegraph}");

    // The screenshot: a page drawn, with the leak's line in the chart's first colour.
    let shot = scratch.0.join("shot.png");
    let window = format!("--window-size={},{}", WINDOW.0, WINDOW.1);
    let screenshot = format!("--screenshot={}", shot.display());
    run_chromium(&scratch.0, &page, &[&screenshot, &window]);
    let (pixels, width, height) = rgb_pixels(&shot);
    assert_eq!((width, height), WINDOW, "{}", shot.display());
    let background = pixels[0];
    let drawn = pixels.iter().filter(|&&p| p != background).count();
    assert!(drawn * 50 > pixels.len(), "{}: {drawn} of {} pixels drawn: a blank page", shot.display(), pixels.len());
    let colors: HashSet<[u8; 3]> = pixels.iter().copied().collect();
    assert!(colors.len() > 50, "{}: {} colours: not a rendered page", shot.display(), colors.len());
    // Leaks are charted first; its legend swatch alone is 14×14 pixels of that colour.
    let leak_color = SERIES_COLORS[0];
    let near = |p: &[u8; 3]| p.iter().zip(leak_color).all(|(&a, b)| a.abs_diff(b) <= 3);
    let leak_pixels = pixels.iter().filter(|p| near(p)).count();
    assert!(leak_pixels >= 150, "{}: {leak_pixels} pixels of the leak's colour {leak_color:?}", shot.display());
}
