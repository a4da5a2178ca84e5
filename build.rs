//! Compiles the BPF objects with clang into `OUT_DIR`, where the subsystems
//! embed them: `bpf/<name>.bpf.c` becomes `<name>.bpf.o` (production), and
//! `bpf/tests/<name>.bpf.c` becomes `test-<name>.bpf.o` (test variants,
//! embedded only with the `test-hooks` feature). The build directory is
//! mapped away in the debug info, so the same source gives the same bytes
//! (and fingerprint) wherever it is built.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=CLANG");
    for dir in ["bpf", "bpf/include", "bpf/tests"] {
        println!("cargo:rerun-if-changed={dir}");
    }
    let multiarch = multiarch_include();
    for (dir, prefix) in [("bpf", ""), ("bpf/tests", "test-")] {
        for src in sources_with(&manifest.join(dir), ".bpf.c") {
            println!("cargo:rerun-if-changed={}", src.display());
            let stem = src.file_name().unwrap().to_string_lossy().trim_end_matches(".bpf.c").to_string();
            let obj = out.join(format!("{prefix}{stem}.bpf.o"));
            compile(&clang, &manifest, &src, &obj, multiarch.as_deref());
            // The fingerprint, computed once here instead of at every call.
            let bytes = std::fs::read(&obj).expect("read compiled object");
            let hex: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(out.join(format!("{prefix}{stem}.bpf.o.sha256")), hex).expect("write fingerprint");
        }
    }
    for header in sources_with(&manifest.join("bpf/include"), ".h") {
        println!("cargo:rerun-if-changed={}", header.display());
    }
}

fn sources_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("read dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

fn compile(clang: &str, manifest: &Path, src: &Path, obj: &Path, multiarch: Option<&Path>) {
    let mut cmd = Command::new(clang);
    cmd.args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"]);
    // Reproducible objects: no build path in the debug info.
    cmd.arg(format!("-ffile-prefix-map={}=.", manifest.display()));
    if let Some(dir) = multiarch {
        // <asm/types.h> lives in the multiarch directory on Debian.
        cmd.arg("-I").arg(dir);
    }
    cmd.current_dir(manifest).arg("-c").arg(src).arg("-o").arg(obj);
    let output = match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run `{clang}` to compile {}: {e}\n\
             The BPF data plane needs clang and the libbpf headers: apt-get install clang libbpf-dev",
            src.display()
        ),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            "\nThe libbpf headers are missing: apt-get install libbpf-dev"
        } else {
            ""
        };
        panic!("clang failed to compile {}:\n{stderr}{hint}", src.display());
    }
}

/// Debian keeps `asm/` under /usr/include/<multiarch>; clang -target bpf does not look there.
fn multiarch_include() -> Option<PathBuf> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let os = env::var("CARGO_CFG_TARGET_OS").ok()?;
    let env_ = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let dir = PathBuf::from(format!("/usr/include/{arch}-{os}-{env_}"));
    dir.is_dir().then_some(dir)
}
