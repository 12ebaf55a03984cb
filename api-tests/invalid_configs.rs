//! The folder of invalid configs (`api-tests/invalid-configs/*.json`, each with the
//! exact detail it must produce in a sibling `.detail` file), checked by one test:
//! every case is PUT to `/config` and must be refused with `Invalid configuration.`,
//! that detail, and no change.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{Server, echo_config};

/// Fewer cases than this means the folder is missing or was emptied.
const MIN_CASES: usize = 10;

#[test]
fn every_invalid_config_is_refused_with_its_detail() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("api-tests/invalid-configs");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    files.sort();
    let cases: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert!(
        cases.len() >= MIN_CASES,
        "{} holds {} cases; at least {MIN_CASES} are expected",
        dir.display(),
        cases.len()
    );

    let mut problems = Vec::new();
    for detail_file in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "detail"))
    {
        if !detail_file.with_extension("json").exists() {
            problems.push(format!("{}: no matching .json case", detail_file.display()));
        }
    }

    let server = Server::start();
    server.load(&echo_config(server.dir()));
    let mut before = server.snapshot();
    for case in cases {
        let name = case
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = fs::read(case).unwrap_or_else(|e| panic!("read {}: {e}", case.display()));
        let want = match fs::read_to_string(case.with_extension("detail")) {
            Ok(text) => Some(text.trim().to_string()),
            Err(e) => {
                problems.push(format!("{name}: cannot read its .detail file: {e}"));
                None
            }
        };
        let resp = match server.try_request("PUT", "/config", &[], Some(&body)) {
            Ok(resp) => resp,
            Err(e) => {
                problems.push(format!("{name}: request failed: {e}"));
                continue;
            }
        };
        let json: serde_json::Value = serde_json::from_slice(&resp.bytes).unwrap_or_default();
        let error = json["error"].as_str().unwrap_or("");
        let detail = json["detail"].as_str().unwrap_or("");
        if resp.status != 400 || error != "Invalid configuration." {
            problems.push(format!(
                "{name}: expected 400 Invalid configuration., got {} {error:?} (detail {detail:?})",
                resp.status
            ));
        } else if let Some(want) = want
            && detail != want
        {
            problems.push(format!(
                "{name}: detail mismatch\n    expected: {want:?}\n    got:      {detail:?}"
            ));
        }
        match server.try_request("GET", "/config", &[], None) {
            Ok(after) if after.status == 200 => {
                let tree: serde_json::Value =
                    serde_json::from_slice(&after.bytes).unwrap_or_default();
                let generation = after.header("etag").map(str::to_string);
                if tree != before.0 || generation != Some(format!("\"{}\"", before.1)) {
                    problems.push(format!("{name}: the committed tree or generation changed"));
                    // Go on from the new state so one failure is not reported for every case.
                    server.load(&echo_config(server.dir()));
                    before = server.snapshot();
                }
            }
            Ok(after) => problems.push(format!("{name}: GET /config afterwards failed:\n{after}")),
            Err(e) => panic!(
                "{name}: the server stopped answering: {e}\n{}",
                server.log()
            ),
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
