//! The profile-guided release build: `pgo/rustc-wrapper` (Cargo's rustc
//! wrapper, `.cargo/config.toml`) adds the committed profile to the crates
//! a release build optimises and leaves every other compilation alone, the
//! rustc here reads that profile, and the Dockerfile's builder gets both.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::repo_file;

/// A stand-in for rustc that answers `-vV` with an LLVM version and records
/// the arguments of any other call in `args.txt`: what the wrapper passed
/// on. The real rustc cannot say which flags it was given.
fn fake_rustc(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("rustc");
    let script = "#!/bin/sh\nif [ \"$1\" = -vV ]; then echo 'LLVM version: 22.1.2'; exit 0; fi\n\
                  echo \"$@\" > \"$(dirname \"$0\")/args.txt\"\n";
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Runs the wrapper on `rustc` with `args` and `env` (nothing else of the
/// caller's flags inherited): the arguments rustc got, and the stderr.
fn wrap(rustc: &Path, args: &[&str], env: &[(&str, &str)]) -> (String, String) {
    let dir = rustc.parent().unwrap();
    let _ = std::fs::remove_file(dir.join("args.txt"));
    let mut cmd = Command::new(repo_file("pgo/rustc-wrapper"));
    cmd.arg(rustc).args(args);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RAMPART_NO_PGO", "RAMPART_PGO_GENERATE"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = std::fs::read_to_string(dir.join("args.txt")).unwrap_or_default();
    (got.trim().to_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_wrapper_adds_the_profile_to_optimised_crates_only() {
    let dir = tempfile::tempdir().unwrap();
    let rustc = fake_rustc(dir.path());
    let profile = repo_file("pgo/rampart.profdata").canonicalize().unwrap();
    let release = ["--crate-name", "hyper", "-C", "opt-level=3", "-C", "lto"];

    let (got, _) = wrap(&rustc, &release, &[]);
    assert_eq!(got, format!("--crate-name hyper -C opt-level=3 -C lto -Cprofile-use={}", profile.display()));

    // Dev and test builds, and a release build's build scripts.
    for args in [&["--crate-name", "hyper", "-C", "opt-level=0"][..], &["--crate-name", "build_script_build"]] {
        let (got, _) = wrap(&rustc, args, &[]);
        assert_eq!(got, args.join(" "));
    }
    // A caller with its own flags (cargo fuzz's sanitizer builds), and the
    // documented way to build without the profile.
    for env in [("RUSTFLAGS", "-Cprofile-generate=/tmp/p"), ("RAMPART_NO_PGO", "1")] {
        let (got, _) = wrap(&rustc, &release, &[env]);
        assert_eq!(got, release.join(" "), "{env:?}");
    }
    // pgo/train's instrumented build: the same crates, the other flag.
    let (got, _) = wrap(&rustc, &release, &[("RAMPART_PGO_GENERATE", "/tmp/counts")]);
    assert_eq!(got, "--crate-name hyper -C opt-level=3 -C lto -Cprofile-generate=/tmp/counts");
    let (got, _) = wrap(&rustc, &["-C", "opt-level=0"], &[("RAMPART_PGO_GENERATE", "/tmp/counts")]);
    assert_eq!(got, "-C opt-level=0");

    // Cargo's version query passes through.
    let out = Command::new(repo_file("pgo/rustc-wrapper")).arg(&rustc).arg("-vV").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "LLVM version: 22.1.2\n");
}

/// The committed profile is readable by this machine's rustc. rustc
/// only warns about a profile it cannot read (and builds without it), so
/// the proof is the silence: the same compilation beside a damaged profile
/// names it in a warning.
#[test]
fn this_rustc_reads_the_committed_profile() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("probe.rs");
    std::fs::write(&src, "pub fn add(a: u64, b: u64) -> u64 { a.wrapping_add(b) }\n").unwrap();
    let compile = |wrapper: &Path| {
        let mut cmd = Command::new(wrapper);
        cmd.args(["rustc", "--crate-name", "probe", "--crate-type", "lib", "--edition", "2021", "-C", "opt-level=3"]);
        cmd.args(["--emit", "obj", "-o"]).arg(dir.path().join("probe.o")).arg(&src);
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "RAMPART_NO_PGO", "RAMPART_PGO_GENERATE"] {
            cmd.env_remove(var);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = compile(&repo_file("pgo/rustc-wrapper"));
    assert!(!err.contains("rampart.profdata"), "{err}");

    let copy = dir.path().join("pgo");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(repo_file("pgo/rustc-wrapper"), copy.join("rustc-wrapper")).unwrap();
    std::fs::write(copy.join("rampart.profdata"), b"\xfflprofi\x81 not a profile").unwrap();
    let err = compile(&copy.join("rustc-wrapper"));
    assert!(err.contains("rampart.profdata"), "a damaged profile passed unnoticed: {err}");
}

/// The image's builder copies what the build reads besides the sources:
/// Cargo's config and the profile, before the dependencies are built, and
/// the build context lets them in.
#[test]
fn the_dockerfile_builds_with_cargos_config_and_the_profile() {
    let dockerfile = std::fs::read_to_string(repo_file("Dockerfile")).unwrap();
    let first_build = dockerfile.find("cargo build").expect("the Dockerfile builds");
    for copy in ["COPY .cargo ./.cargo\n", "COPY pgo/rustc-wrapper pgo/rampart.profdata ./pgo/\n"] {
        let at = dockerfile.find(copy).unwrap_or_else(|| panic!("the Dockerfile lacks {copy:?}"));
        assert!(at < first_build, "{copy:?} comes after the dependencies are built");
    }
    let ignore = std::fs::read_to_string(repo_file(".dockerignore")).unwrap();
    for allowed in ["!.cargo/config.toml", "!pgo/rustc-wrapper", "!pgo/rampart.profdata"] {
        assert!(ignore.lines().any(|l| l == allowed), ".dockerignore keeps out {allowed}");
    }
    let config = std::fs::read_to_string(repo_file(".cargo/config.toml")).unwrap();
    assert!(config.contains("rustc-wrapper = \"pgo/rustc-wrapper\""));
}
