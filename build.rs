//! Generates the C headers from `src/ffi` with cbindgen: `cmr.h`, and
//! `cmr_cdef.h` (no preprocessor lines, no comments; the constants as
//! `static const int`, which it can read) for LuaJIT's `ffi.cdef`. They go to OUT_DIR, and also to `$CMR_HEADER_DIR` when set,
//! which is how the Makefile refreshes `include/` and checks it is current.
//! Also gives the cdylib its soname, `libcmr.so.0`.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=CMR_HEADER_DIR");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libcmr.so.0");
    }

    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    use cbindgen::ItemType;
    let cdef_config = cbindgen::Config {
        header: None,
        include_guard: None,
        sys_includes: Vec::new(),
        cpp_compat: false,
        documentation: false,
        export: cbindgen::ExportConfig {
            item_types: vec![
                ItemType::Enums,
                ItemType::Structs,
                ItemType::Typedefs,
                ItemType::OpaqueItems,
                ItemType::Functions,
            ],
            ..config.export.clone()
        },
        ..config.clone()
    };
    let mut dirs = vec![PathBuf::from(env::var("OUT_DIR").unwrap())];
    if let Some(dir) = env::var_os("CMR_HEADER_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    let generate = |config| {
        let mut text = Vec::new();
        cbindgen::generate_with_config(&crate_dir, config)
            .expect("cbindgen could not read src/ffi")
            .write(&mut text);
        String::from_utf8(text).expect("cbindgen writes UTF-8")
    };
    let header = generate(config);
    // Every `#define NAME NUMBER`: the cdef's structs size arrays with them.
    let constants: String = header
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("#define ")?.split_whitespace();
            let (name, value) = (words.next()?, words.next()?);
            value.parse::<i32>().ok()?;
            Some(format!("static const int {name} = {value};\n"))
        })
        .collect();
    let cdef = constants + &generate(cdef_config);
    for dir in &dirs {
        for (name, text) in [("cmr.h", &header), ("cmr_cdef.h", &cdef)] {
            // Written only when changed, so that make sees no new header.
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_ref() != Some(text) {
                std::fs::write(&path, text).expect("header written");
            }
        }
    }
}
