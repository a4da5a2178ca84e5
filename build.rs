//! Compiles the BPF data plane (`bpf/*.bpf.c`) with clang into `OUT_DIR`, where
//! `src/bpf.rs` embeds it. Besides the production object, two test objects are
//! built from the same source: one with other code but the same maps (to test
//! the atomic program swap), one with another map layout (to test the
//! verify-then-rebuild path and capacity checks) and one with another layout
//! that the verifier rejects (to test that the old state survives).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Variant {
    suffix: &'static str,
    defines: &'static [&'static str],
}

const VARIANTS: &[Variant] = &[
    Variant { suffix: "", defines: &[] },
    Variant { suffix: "-test-code", defines: &["-DMICROSEG_TEST_VARIANT"] },
    Variant { suffix: "-test-layout", defines: &["-DMICROSEG_RULES_MAX=4096", "-DMICROSEG_TAP_MAX=4"] },
    Variant { suffix: "-test-broken", defines: &["-DMICROSEG_RULES_MAX=2048", "-DMICROSEG_TEST_BROKEN"] },
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf");

    let multiarch = multiarch_include();
    let mut sources: Vec<PathBuf> = std::fs::read_dir("bpf")
        .expect("bpf/ directory")
        .map(|e| e.expect("read bpf/").path())
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();

    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src.file_name().unwrap().to_string_lossy().trim_end_matches(".bpf.c").to_string();
        // The test variants exist for the microseg object only.
        let variants = if stem == "microseg" { VARIANTS } else { &VARIANTS[..1] };
        for v in variants {
            let obj = out.join(format!("{stem}{}.bpf.o", v.suffix));
            compile(&clang, src, &obj, v.defines, multiarch.as_deref());
        }
    }
}

fn compile(clang: &str, src: &Path, obj: &Path, defines: &[&str], multiarch: Option<&Path>) {
    let mut cmd = Command::new(clang);
    cmd.args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"]);
    if let Some(dir) = multiarch {
        // <asm/types.h> lives in the multiarch directory on Debian.
        cmd.arg("-I").arg(dir);
    }
    cmd.args(defines).arg("-c").arg(src).arg("-o").arg(obj);
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
