//! Builds the eBPF object from `../gleak-ebpf` and hands its path to the crate.
//!
//! Two toolchain routes, detected in this order:
//! 1. Debian's `rustc-web` (`/usr/bin/rustc`) with its precompiled `core` for
//!    `bpfel-unknown-none` (`libstd-rust-web-dev-bpf`), unlocked by `RUSTC_BOOTSTRAP=1`;
//! 2. a rustup `nightly` with `rust-src`, using `-Z build-std=core`.
//!
//! Both need `bpf-linker` on PATH. When neither route exists the crate still compiles
//! with an empty object and `gleak` tells the user what to install.
//! `GLEAK_EBPF_OBJECT=/path/to/obj` skips the build and embeds that file.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    compile_protos();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let ebpf_dir = manifest_dir.join("../gleak-ebpf");
    let dest = out_dir.join("gleak-ebpf.o");

    println!("cargo::rustc-check-cfg=cfg(gleak_no_ebpf)");
    println!("cargo::rerun-if-env-changed=GLEAK_EBPF_OBJECT");
    println!("cargo::rerun-if-env-changed=PATH");
    for dir in ["../gleak-ebpf/src", "../gleak-ebpf/Cargo.toml", "../gleak-ebpf/Cargo.lock", "../gleak-common/src"] {
        println!("cargo::rerun-if-changed={dir}");
    }

    if let Some(prebuilt) = env::var_os("GLEAK_EBPF_OBJECT") {
        std::fs::copy(&prebuilt, &dest).expect("copy GLEAK_EBPF_OBJECT");
        return;
    }

    let Some(route) = Route::detect() else {
        println!(
            "cargo::warning=no eBPF toolchain found: gleak is built without its probes. \
             Run scripts/bootstrap.sh (installs rustc-web, libstd-rust-web-dev-bpf and bpf-linker), then rebuild."
        );
        std::fs::write(&dest, []).unwrap();
        println!("cargo::rustc-cfg=gleak_no_ebpf");
        return;
    };

    let target_dir = out_dir.join("ebpf-target");
    let mut cmd = route.command();
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--target", "bpfel-unknown-none", "--target-dir"])
        .arg(&target_dir);
    // The outer build's settings must not leak into the nested one.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if (key.starts_with("CARGO_") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOCFLAGS"
            || key == "RUSTUP_TOOLCHAIN"
        {
            cmd.env_remove(key.as_ref());
        }
    }
    route.configure(&mut cmd);
    // bpf-linker usually lives in ~/.cargo/bin, which a sudo'd PATH may lack.
    if let (Some(path), Some(home)) = (env::var_os("PATH"), env::var_os("HOME")) {
        let mut dirs: Vec<PathBuf> = env::split_paths(&path).collect();
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
        cmd.env("PATH", env::join_paths(dirs).unwrap());
    }
    // Same flags aya-build passes: BTF for the loader, and the arch whose pt_regs
    // the probes read: the one gleak is built for (it loads them into its own kernel).
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let arch_cfg = format!("bpf_target_arch=\"{arch}\"");
    let rustflags = ["--cfg", &arch_cfg, "-Cdebuginfo=2", "-Clink-arg=--btf"].join("\x1f");
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);

    let status = cmd.status().unwrap_or_else(|e| panic!("failed to run cargo for gleak-ebpf ({}): {e}", route.name()));
    if !status.success() {
        panic!("building gleak-ebpf with the {} route failed ({status}); see the output above", route.name());
    }
    let built = target_dir.join("bpfel-unknown-none/release/gleak");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("copy {}: {e}", built.display()));
}

enum Route {
    /// Debian's rustc-web with precompiled `core` for the BPF targets.
    Debian { cargo: PathBuf },
    /// rustup nightly with rust-src.
    Nightly,
}

impl Route {
    fn detect() -> Option<Self> {
        if !on_path("bpf-linker") {
            return None;
        }
        if Path::new("/usr/bin/rustc").exists() && Path::new("/usr/lib/rustlib/bpfel-unknown-none/lib").is_dir() {
            let cargo = env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| "cargo".into());
            return Some(Route::Debian { cargo });
        }
        let nightly_src = Command::new("rustup")
            .args(["component", "list", "--toolchain", "nightly", "--installed"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .is_some_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.starts_with("rust-src")));
        nightly_src.then_some(Route::Nightly)
    }

    fn name(&self) -> &'static str {
        match self {
            Route::Debian { .. } => "Debian rustc-web",
            Route::Nightly => "rustup nightly + build-std",
        }
    }

    fn command(&self) -> Command {
        match self {
            Route::Debian { cargo } => Command::new(cargo),
            Route::Nightly => {
                let mut c = Command::new("rustup");
                c.args(["run", "nightly", "cargo"]);
                c
            }
        }
    }

    fn configure(&self, cmd: &mut Command) {
        match self {
            Route::Debian { .. } => {
                cmd.env("RUSTC", "/usr/bin/rustc").env("RUSTC_BOOTSTRAP", "1");
            }
            Route::Nightly => {
                cmd.args(["-Z", "build-std=core"]);
            }
        }
    }
}

fn on_path(program: &str) -> bool {
    let home_bin = env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin"));
    env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(home_bin)
        .any(|dir| dir.join(program).is_file())
}

/// pprof's `profile.proto` to `prost` types in OUT_DIR, by `protox` (a protobuf
/// compiler in Rust: no system `protoc`).
fn compile_protos() {
    println!("cargo::rerun-if-changed=proto/profile.proto");
    let fds = protox::compile(["profile.proto"], ["proto"]).unwrap_or_else(|e| panic!("proto/profile.proto: {e}"));
    prost_build::Config::new().compile_fds(fds).unwrap_or_else(|e| panic!("generating profile.proto's types: {e}"));
}
