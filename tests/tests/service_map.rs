//! `eastwatch baseline graph` of the demo's baseline, evidence and alerts
//! (`tests/fixtures/demo/`), opened in headless Chromium (Debian's
//! `chromium`, installed by `cargo xtask setup`): the DOM the browser
//! built has every workload, the allowed edges with their ports and the
//! attack's paths in red, and its screenshot shows them. Chromium missing
//! is a failure, never a skip.

// Test helpers fail the test by panicking, with the reason in the message.
#![allow(clippy::expect_used)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use eastwatch_tests::{
    TempDir,
    agent::agent_binary,
    shop::{arg, fixture},
};

const RED: (u8, u8, u8) = (0xd6, 0x27, 0x28);
const WORKLOAD_FILL: (u8, u8, u8) = (0xe8, 0xf0, 0xfe);

fn chromium() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium is not installed: the service map is checked in a real browser. \
         `cargo xtask setup` installs Debian's chromium"
    );
}

/// Headless Chromium with a profile of its own and nothing in the
/// background that would reach the network; stdout when it exits.
fn run_chromium(profile: &Path, args: &[String]) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().expect("wait chromium") {
            let out = child.wait_with_output().expect("chromium output");
            assert!(
                status.success(),
                "chromium failed: {status}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The attributes of every element whose start tag begins with `prefix`.
fn elements(dom: &str, prefix: &str) -> Vec<BTreeMap<String, String>> {
    let mut found = Vec::new();
    for (start, _) in dom.match_indices(prefix) {
        let tag = &dom[start..];
        let end = tag.find('>').expect("closed tag");
        let mut attrs = BTreeMap::new();
        let mut rest = &tag[..end];
        while let Some(eq) = rest.find("=\"") {
            let name = rest[..eq].rsplit(' ').next().unwrap_or_default().to_owned();
            let value_start = eq + 2;
            let close = rest[value_start..].find('"').expect("closed attribute");
            attrs.insert(name, rest[value_start..value_start + close].to_owned());
            rest = &rest[value_start + close + 1..];
        }
        // The element's own content, up to its end (for the path stroke).
        let body_end = tag.find("</g>").unwrap_or(tag.len());
        attrs.insert("#content".into(), tag[..body_end].to_owned());
        found.push(attrs);
    }
    found
}

fn unescape(text: &str) -> String {
    text.replace("&gt;", ">")
        .replace("&lt;", "<")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[test]
fn the_demo_map_renders_in_chromium_with_the_attack_in_red() {
    let dir = TempDir::new("map");
    let map = dir.join("shop-map.html");
    let out = Command::new(agent_binary())
        .args([
            "baseline",
            "graph",
            arg(&fixture("shop-baseline.yaml")),
            "--evidence",
            arg(&fixture("shop-evidence.json")),
            "--alerts",
            arg(&fixture("shop-alerts.jsonl")),
            "--out",
            arg(&map),
        ])
        .output()
        .expect("run eastwatch baseline graph");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&map).expect("the map");
    for forbidden in [
        "<script", "http://", "https://", "<link", "@import", "url(http",
    ] {
        let allowed_namespace = "http://www.w3.org/2000/svg";
        let rest = html.replace(allowed_namespace, "");
        assert!(
            !rest.contains(forbidden),
            "the page must be self-contained: {forbidden}"
        );
    }

    let profile = dir.join("profile");
    let url = format!("file://{}", map.display());
    let dom = run_chromium(&profile, &["--dump-dom".into(), url.clone()]);
    assert!(dom.contains("<svg"), "Chromium rendered no SVG:\n{dom}");

    let nodes = elements(&dom, "<g id=\"n");
    let ids: Vec<String> = nodes.iter().map(|n| unescape(&n["data-id"])).collect();
    for tier in ["frontend", "api", "db"] {
        assert!(
            ids.contains(&format!("workload:shop/deployment/{tier}")),
            "no node for {tier}: {ids:?}"
        );
    }
    let reach = |tier: &str| -> String {
        nodes
            .iter()
            .find(|n| n["data-id"] == format!("workload:shop/deployment/{tier}"))
            .map(|n| n["data-reach"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        reach("frontend"),
        "2",
        "the frontend reaches the api and, through it, the db"
    );
    assert_eq!(reach("api"), "1");
    assert_eq!(reach("db"), "0");
    assert!(
        nodes.iter().all(|n| n["data-group"] == "namespace shop"),
        "every node in the shop's band"
    );

    let edges = elements(&dom, "<g id=\"e");
    let edge = |from: &str, to: &str, state: &str| {
        edges
            .iter()
            .find(|e| {
                e["data-from"] == format!("workload:shop/deployment/{from}")
                    && e["data-to"] == format!("workload:shop/deployment/{to}")
                    && e["data-state"] == state
            })
            .unwrap_or_else(|| panic!("no {state} edge {from} -> {to} in {edges:#?}"))
    };
    assert_eq!(edge("frontend", "api", "used")["data-ports"], "8080/tcp");
    assert_eq!(edge("api", "db", "used")["data-ports"], "5432/tcp");
    let to_db = edge("frontend", "db", "alert");
    assert!(to_db["data-ports"].contains("5432/tcp"), "{to_db:?}");
    let udp = edge("frontend", "api", "alert");
    assert_eq!(udp["data-ports"], "9999/udp");
    for alert in [to_db, udp] {
        assert!(
            alert["#content"].contains("stroke=\"#d62728\""),
            "alert edges are red: {alert:?}"
        );
    }
    for allowed in edges.iter().filter(|e| e["data-state"] != "alert") {
        assert!(
            !allowed["#content"].contains("#d62728"),
            "only alerts are red"
        );
    }

    // What a person sees: the red of the attack and the workloads' boxes.
    let shot = dir.join("map.png");
    run_chromium(
        &profile,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,900".into(),
            url,
        ],
    );
    let (width, height, pixels) = decode(&shot);
    assert_eq!((width, height), (1280, 900));
    let near = |(r, g, b): (u8, u8, u8), want: (u8, u8, u8)| {
        r.abs_diff(want.0) <= 12 && g.abs_diff(want.1) <= 12 && b.abs_diff(want.2) <= 12
    };
    let red = pixels.iter().filter(|p| near(**p, RED)).count();
    let boxes = pixels.iter().filter(|p| near(**p, WORKLOAD_FILL)).count();
    assert!(red > 300, "the attack paths show red: {red} red pixels");
    assert!(
        boxes > 3 * 2000,
        "three workload boxes show: {boxes} pixels"
    );
}

fn decode(path: &Path) -> (u32, u32, Vec<(u8, u8, u8)>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buffer = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buffer).expect("a frame");
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buffer[..info.buffer_size()]
        .chunks(channels)
        .map(|p| (p[0], p[1], p[2]))
        .collect();
    (info.width, info.height, pixels)
}
