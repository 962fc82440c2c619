//! Replays the kept fuzz corpus (fuzz/corpus/<target>/) through the fuzz
//! targets' own functions, on stable Rust: only a campaign needs
//! cargo-fuzz and nightly (see RELIABILITY.md).

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::path::Path;

#[test]
fn the_kept_corpus_passes_every_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in ["iq", "options", "abi"] {
        let mut files = 0;
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| targets::run(target, &data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            files += 1;
        }
        assert!(files > 10, "{target}: only {files} inputs kept");
    }
}
