//! Compiles the XS glue (`glue.c`) against the running perl's headers and
//! ccflags. Nothing links libperl: the Perl_* symbols resolve in the perl
//! process that loads the shared object.

use std::process::Command;

fn perl_config(key: &str) -> String {
    let out = Command::new("perl")
        .args(["-MConfig", "-e", &format!("print $Config{{{key}}}")])
        .output()
        .expect("run perl -MConfig (is perl installed?)");
    assert!(out.status.success(), "perl -MConfig failed for {key}");
    String::from_utf8(out.stdout).expect("utf-8 perl config")
}

/// The package, crate and module versions must agree (scripts/check-versions.sh).
fn check_versions() {
    let root = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("..");
    for f in ["debian/changelog", "Cargo.toml", "perl/PVE/RS/SDN/Microseg.pm", "scripts/check-versions.sh"] {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let out = Command::new("sh").arg(root.join("scripts/check-versions.sh")).arg(&root).output().expect("run sh");
    if !out.status.success() {
        panic!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
}

fn main() {
    check_versions();
    println!("cargo:rerun-if-changed=glue.c");
    let core = format!("{}/CORE", perl_config("archlibexp"));
    assert!(
        std::path::Path::new(&core).join("perl.h").exists(),
        "perl headers not found in {core}: apt-get install libperl5.36 (or perl's -dev package)"
    );
    let version = std::env::var("CARGO_PKG_VERSION").unwrap();
    let mut build = cc::Build::new();
    build.file("glue.c").include(&core).define("XS_VERSION", format!("\"{version}\"").as_str());
    for flag in perl_config("ccflags").split_whitespace() {
        build.flag(flag);
    }
    // Perl's headers are not -Wall clean; keep our own code warning-free otherwise.
    build.flag_if_supported("-Wno-unused-parameter").warnings(true).compile("microseg_perl_glue");
}
