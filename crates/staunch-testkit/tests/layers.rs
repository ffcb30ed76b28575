//! Keeps DESIGN.md's layering honest: a Staunch crate depends only on crates in lower layers,
//! and `staunch-testkit` is only ever a dev-dependency. Reads `cargo metadata`.

use std::collections::HashMap;
use std::process::Command;

/// DESIGN.md §2. Crates not listed here (benches, examples) may depend on anything.
const LAYERS: &[(&str, u8)] = &[
    ("staunch-core", 0),
    ("staunch-log", 1),
    ("staunch-protocol", 1),
    ("staunch-replication", 2),
    ("staunch-controller", 2),
    ("staunch-broker", 3),
    ("staunch-client", 3),
    ("staunch-server", 4),
    ("staunch-producer", 4),
    ("staunch-consumer", 4),
    ("staunch-cli", 5),
    ("staunch-ffi", 5),
    ("staunch-python", 5),
];

#[test]
fn crates_depend_only_on_lower_layers() {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let layers: HashMap<&str, u8> = LAYERS.iter().copied().collect();
    let mut checked = 0;
    let mut violations = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if !name.starts_with("staunch-") {
            continue;
        }
        for dep in package["dependencies"].as_array().unwrap() {
            let dep_name = dep["name"].as_str().unwrap();
            if !dep_name.starts_with("staunch-") {
                continue;
            }
            checked += 1;
            let dev_only = dep["kind"].as_str() == Some("dev");
            if dep_name == "staunch-testkit" && !dev_only && name != "staunch-benches" {
                violations.push(format!(
                    "{name} depends on staunch-testkit outside [dev-dependencies]"
                ));
            }
            let (Some(&own), Some(&theirs)) = (layers.get(name), layers.get(dep_name)) else {
                continue;
            };
            if theirs >= own {
                violations.push(format!(
                    "{name} (layer {own}) depends on {dep_name} (layer {theirs})"
                ));
            }
        }
        if name != "staunch-benches" && name != "staunch-examples" && name != "staunch-testkit" {
            assert!(
                layers.contains_key(name),
                "{name} has no layer in DESIGN.md: add it here"
            );
        }
    }
    assert!(
        checked > 0,
        "no internal dependencies found: is this the workspace?"
    );
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}
