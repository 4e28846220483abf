//! The library's layering, checked from its source: the top-level modules of `src/` import
//! each other without a cycle, and nothing in the library but its root (`run`) reaches
//! `daemon`, which builds the parts bottom-up. `cargo test --test layering` prints the order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Top-level module -> the top-level modules its files name through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph = BTreeMap::new();
    for entry in fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        // The binary's entry points and the crate root are not modules of the library.
        if ["main", "lib", "cli"].contains(&name.as_str()) {
            continue;
        }
        let mut text = String::new();
        collect(&path, &mut text);
        let mut used = BTreeSet::new();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for (i, _) in code.match_indices("crate::") {
                let rest = &code[i + "crate::".len()..];
                if let Some(group) = rest.strip_prefix('{') {
                    let group = group.split('}').next().unwrap_or("");
                    for item in group.split(',') {
                        used.insert(ident(item.trim()));
                    }
                } else {
                    used.insert(ident(rest));
                }
            }
        }
        used.retain(|m| !m.is_empty() && *m != name);
        // A module file and its directory of submodules are one module.
        graph.entry(name).or_insert_with(BTreeSet::new).extend(used);
    }
    graph
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

fn collect(path: &Path, text: &mut String) {
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            collect(&entry.unwrap().path(), text);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        text.push_str(&fs::read_to_string(path).unwrap());
        text.push('\n');
    }
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = imports();
    assert!(graph.contains_key("actors") && graph.contains_key("domain"));
    // Peel off modules whose imports are all placed already; what is left holds a cycle.
    let mut placed: Vec<String> = Vec::new();
    let mut left = graph.clone();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|(_, deps)| {
                deps.iter()
                    .all(|d| placed.contains(d) || !graph.contains_key(d))
            })
            .map(|(m, _)| m.clone())
            .collect();
        assert!(!ready.is_empty(), "import cycle among {left:?}");
        for m in ready {
            left.remove(&m);
            placed.push(m);
        }
    }
    println!("bottom-up: {}", placed.join(" < "));
}

#[test]
fn only_the_crate_root_reaches_daemon() {
    let graph = imports();
    let importers: Vec<&String> = graph
        .iter()
        .filter(|(_, deps)| deps.contains("daemon"))
        .map(|(m, _)| m)
        .collect();
    assert!(importers.is_empty(), "{importers:?} import daemon");
    let lib = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("\nmod daemon;"),
        "daemon stays private to the library"
    );
}

#[test]
fn the_domain_imports_no_runtime() {
    let graph = imports();
    assert!(
        graph["domain"].is_empty(),
        "domain imports {:?}",
        graph["domain"]
    );
    let mut text = String::new();
    collect(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/domain"),
        &mut text,
    );
    for runtime in ["tokio::", "redis::", "actix::"] {
        assert!(!text.contains(runtime), "domain uses {runtime}");
    }
}

/// Every Lua script lives in a `.lua` file of `src/store/scripts/` (loaded by its registry):
/// no Rust file of the library or its tests holds Lua.
#[test]
fn no_rust_file_holds_lua() {
    fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                rust_files(&entry.unwrap().path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "tests", "bench/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let call = ["redis", ".call("].concat();
    let mut holding: Vec<String> = files
        .iter()
        .filter(|f| fs::read_to_string(f).unwrap().contains(&call))
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect();
    holding.sort();
    // The registry's own test names the pattern it looks for in the scripts, and the hostile
    // input test sends Lua-looking ids (which are refused).
    assert_eq!(
        holding,
        ["src/store/scripts/mod.rs", "tests/daemon/bad_input.rs"],
        "Lua in Rust files"
    );
}

/// Features hold narrow handles (`OrderStore`, `TimerStore`, ...), made once at start-up: only
/// the places that build a feature name the `Store` they are made from. A module that starts
/// importing `Store` to reach some other feature's part of Redis fails here.
#[test]
fn only_start_up_names_the_store() {
    fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
        if path.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                rust_files(&entry.unwrap().path(), out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut naming: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(root.join("src/store")))
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap();
            let path = "crate::store::Store";
            text.match_indices(path).any(|(i, _)| {
                !text[i + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            }) || text.split("use crate::store::{").skip(1).any(|group| {
                group
                    .split('}')
                    .next()
                    .unwrap_or("")
                    .split(',')
                    .any(|item| item.trim() == "Store")
            })
        })
        .map(|f| f.strip_prefix(root).unwrap().display().to_string())
        .collect();
    naming.sort();
    assert_eq!(
        naming,
        [
            // Each makes its handles from the Store once, where the feature is built.
            "src/actors/mod.rs",
            "src/admin/mod.rs",
            "src/daemon.rs",
            "src/health.rs",
            "src/http/api.rs",
            "src/http/mod.rs",
            "src/ownership.rs",
            "src/scheduler.rs",
            "src/webhooks/mod.rs",
        ],
        "modules naming the Store"
    );
}

/// The webhook queues and cursors are state machines unit-tested without Redis or HTTP: they
/// must not reach either.
#[test]
fn the_state_machines_reach_no_redis_and_no_http() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["src/webhooks/queue.rs", "src/webhooks/cursor.rs"] {
        let text = fs::read_to_string(root.join(file)).unwrap();
        for forbidden in [
            "redis::",
            "reqwest",
            "WebhookStore",
            "crate::store::conn",
            "tokio::net",
            "Ownership",
            ".await",
        ] {
            assert!(
                !text.contains(forbidden),
                "{file} reaches `{forbidden}`: keep its I/O in the endpoint loop"
            );
        }
    }
}
