//! JSON and XML threat protection, as an attacker meets it: request bodies
//! breaking a limit are refused with 400 naming it, as they stream and
//! before the backend receives a complete request; compressed and
//! undeclared bodies cannot slip past; a DTD never reaches the backend.

use crate::support::*;
use std::io::Write;
use std::time::{Duration, Instant};

const JSON_LIMITS: &str = "{maxContainerDepth: 4, maxObjectEntryCount: 5, maxObjectEntryNameLength: 10, maxArrayElementCount: 20, maxStringValueLength: 30}";

fn json_gateway(backend: &Backend) -> Gateway {
    let url = backend.url();
    Gateway::start(&config_with_routes(&format!(
        r#"    - id: api
      path: "/api/*"
      upstream: {{url: "{url}"}}
      policies:
        - json-threat-protection: {JSON_LIMITS}
    - id: unlimited
      path: "/open/*"
      upstream: {{url: "{url}"}}
      policies:
        - json-threat-protection: {{}}"#
    )))
}

/// Complete requests the backend received on `target`.
fn received(backend: &Backend, target: &str) -> usize {
    let seen = backend.seen.lock().expect("lock");
    seen.iter().filter(|s| s.target == target).count()
}

/// POST `body` to `path` with these headers on a fresh connection.
fn post(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    gw.connect().request("POST", path, headers, body)
}

const JSON: (&str, &str) = ("content-type", "application/json");

#[test]
fn json_bodies_breaking_a_limit_are_refused_before_the_backend_gets_them() {
    let backend = Backend::echo();
    let gw = json_gateway(&backend);

    let good = br#"{"name": "widget", "tags": ["a", "b"], "dims": {"w": 1, "h": [1, [2]]}}"#;
    let r = post(&gw, "/api/ok", &[JSON], good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.last().body, good.to_vec(), "forwarded unchanged");

    let deep = format!("{}{}", "[".repeat(5), "]".repeat(5));
    let many = format!(
        "{{{}}}",
        (0..6)
            .map(|i| format!("\"k{i}\":{i}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let long_array = format!("[{}]", vec!["1"; 21].join(","));
    let cases: [(&str, String, &str); 6] = [
        ("depth", deep, "maxContainerDepth"),
        ("entries", many, "maxObjectEntryCount"),
        (
            "name",
            r#"{"abcdefghijk": 1}"#.into(),
            "maxObjectEntryNameLength",
        ),
        ("elements", long_array, "maxArrayElementCount"),
        (
            "string",
            format!("{{\"a\": \"{}\"}}", "x".repeat(31)),
            "maxStringValueLength",
        ),
        ("not JSON", r#"{"a": 1,}"#.into(), "not valid JSON"),
    ];
    for (what, body, rule) in &cases {
        let target = format!("/api/{what}").replace(' ', "-");
        let r = post(&gw, &target, &[JSON], body.as_bytes());
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let message = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(message.contains(rule), "{what}: {message}");
        assert!(message.starts_with("JSON threat protection: "), "{message}");
        assert_eq!(received(&backend, &target), 0, "{what} reached the backend");
    }
    // the same limits, exactly met, pass
    let edge = format!(
        "{{\"abcdefghij\": [[[\"{}\"]]], \"b\": [{}]}}",
        "y".repeat(30),
        vec!["0"; 20].join(",")
    );
    assert_eq!(post(&gw, "/api/edge", &[JSON], edge.as_bytes()).status, 200);

    // every spelling of a JSON media type is checked
    let deep = b"[[[[[[]]]]]]";
    for ct in [
        "Application/JSON; charset=utf-8",
        "application/vnd.api+json",
        "APPLICATION/PROBLEM+JSON",
    ] {
        let r = post(&gw, "/api/typed", &[("content-type", ct)], deep);
        assert_eq!(r.status, 400, "{ct}");
    }
    // two Content-Type headers: a JSON one among them is enough
    let r = post(
        &gw,
        "/api/two",
        &[("content-type", "text/plain"), JSON],
        deep,
    );
    assert_eq!(r.status, 400, "text/plain beside application/json");
    // no Content-Type: a body that opens an object or array is JSON
    let r = post(&gw, "/api/untyped", &[], b" \n [[[[[[]]]]]]");
    assert_eq!(r.status, 400, "undeclared JSON");
    assert_eq!(
        received(&backend, "/api/typed")
            + received(&backend, "/api/two")
            + received(&backend, "/api/untyped"),
        0
    );
    // a body declared as something else passes unread (documented)
    let r = post(&gw, "/api/text", &[("content-type", "text/plain")], deep);
    assert_eq!(r.status, 200);
    let r = post(&gw, "/api/bytes", &[], b"raw [[[[[[ bytes");
    assert_eq!(r.status, 200, "an undeclared body that is not JSON passes");

    // a compressed body cannot be read: refused, not waved through
    for enc in ["gzip", "br", "identity, gzip"] {
        let r = post(
            &gw,
            "/api/zip",
            &[JSON, ("content-encoding", enc)],
            b"\x1f\x8b",
        );
        assert_eq!(r.status, 415, "{enc}");
    }
    let r = post(
        &gw,
        "/api/plain",
        &[JSON, ("content-encoding", "identity")],
        good,
    );
    assert_eq!(r.status, 200);
    assert_eq!(received(&backend, "/api/zip"), 0);

    // without limits: 10,000 nested arrays still stop at the ceiling
    let bomb = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let r = post(&gw, "/open/bomb", &[JSON], bomb.as_bytes());
    assert_eq!(r.status, 400);
    assert!(r.text().contains("deeper than 1000 levels"), "{}", r.text());
    let fine = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(
        post(&gw, "/open/fine", &[JSON], fine.as_bytes()).status,
        200
    );

    let rejections = gw
        .metric("flexgw_policy_rejections_total{route=\"api\",policy=\"json-threat-protection\"}");
    assert!(rejections >= 10.0, "{rejections}");
    let r = gw.connect().get("/api/after");
    assert_eq!(r.status, 200, "the gateway still serves");
}

#[test]
fn a_breach_mid_stream_cuts_the_upstream_request_and_a_huge_declared_body_is_not_awaited() {
    let backend = Backend::echo();
    let gw = json_gateway(&backend);

    // a 1 GB declared body whose first bytes break the depth limit: the
    // answer comes at once, without waiting for (or buffering) the rest
    let started = Instant::now();
    let head = "POST /api/huge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n[[[[[[[[[[";
    let (status, closed, text) = raw(gw.port, head.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("maxContainerDepth"), "{text}");
    assert!(
        closed,
        "the rest of the body is never read: the connection closes"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(received(&backend, "/api/huge"), 0);

    // chunked: the first chunks are fine and go upstream as they come;
    // the chunk with the breach never does, and the upstream request is
    // cut short (the backend never completes a request)
    let mut chunked = String::from(
        "POST /api/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for part in [
        "[1,2,3,",
        "4,5,6,",
        "7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]",
    ] {
        chunked.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
    }
    chunked.push_str("0\r\n\r\n");
    let (status, closed, text) = raw(gw.port, chunked.as_bytes());
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("maxArrayElementCount"), "{text}");
    assert!(closed);
    assert_eq!(
        received(&backend, "/api/stream"),
        0,
        "no complete request upstream"
    );

    // the same over time: the first part goes upstream while the client
    // pauses, the breaching part arrives later and is refused
    let mut c = gw.connect();
    let (first, rest) = (
        &b"[1,2,3,4,5,"[..],
        &b"6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]"[..],
    );
    c.send_head(
        "POST",
        "/api/slow",
        &[JSON],
        (first.len() + rest.len()) as u64,
    );
    c.send_raw(first);
    std::thread::sleep(Duration::from_millis(300));
    c.send_raw(rest);
    let r = c.read_response(false, true);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("maxArrayElementCount"), "{}", r.text());
    assert_eq!(
        received(&backend, "/api/slow"),
        0,
        "no complete request upstream"
    );

    // a body that ends before its document does is refused at its end
    let r = post(&gw, "/api/short", &[JSON], b"{\"a\": [1, 2");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("ends before the document"),
        "{}",
        r.text()
    );
    assert_eq!(received(&backend, "/api/short"), 0);

    // a large valid body streams through whole
    let url = backend.url();
    drop(gw);
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: big
      path: "/big"
      upstream: {{url: "{url}"}}
      policies:
        - json-threat-protection: {{maxContainerDepth: 3, maxStringValueLength: 100}}"#
    )));
    let mut body = Vec::from(&b"{\"items\": ["[..]);
    for i in 0..200_000 {
        write!(body, "{{\"id\": {i}, \"name\": \"item-{i}\"}},").expect("write");
    }
    body.extend_from_slice(b"{}]}");
    let r = post(&gw, "/big", &[JSON], &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        backend.last().body_len,
        body.len() as u64,
        "every byte arrived"
    );
}

#[test]
fn xml_bodies_breaking_a_limit_or_with_a_dtd_are_refused() {
    let backend = Backend::echo();
    let url = backend.url();
    let gw = Gateway::start(&config_with_routes(&format!(
        r#"    - id: soap
      path: "/soap/*"
      upstream: {{url: "{url}"}}
      policies:
        - xml-threat-protection:
            maxNodeDepth: 4
            maxAttributeCountPerElement: 2
            maxChildCount: 3
            maxTextLength: 20
            maxAttributeLength: 50
            maxCommentLength: 10"#
    )));
    let xml = ("content-type", "text/xml; charset=utf-8");
    let good = br#"<?xml version="1.0" encoding="UTF-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" xmlns:x="urn:x">
  <s:Body>
    <x:getPrice id="1" cur="EUR"><!-- item --><x:item>widget</x:item></x:getPrice>
  </s:Body>
</s:Envelope>"#;
    let r = post(&gw, "/soap/ok", &[xml], good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.last().body, good.to_vec());

    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<lolz>&lol3;</lolz>"#;
    let cases: [(&str, String, &str); 9] = [
        ("laughs", laughs.into(), "DOCTYPE"),
        (
            "xxe",
            "<!DOCTYPE a [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><a>&x;</a>".into(),
            "DOCTYPE",
        ),
        (
            "depth",
            "<a><b><c><d><e/></d></c></b></a>".into(),
            "maxNodeDepth",
        ),
        (
            "attributes",
            "<a x=\"1\" y=\"2\" z=\"3\"/>".into(),
            "maxAttributeCountPerElement",
        ),
        (
            "children",
            "<a><b/><b/><b/><b/></a>".into(),
            "maxChildCount",
        ),
        (
            "text",
            format!("<a>{}</a>", "t".repeat(21)),
            "maxTextLength",
        ),
        (
            "attribute",
            format!("<a x=\"{}\"/>", "v".repeat(51)),
            "maxAttributeLength",
        ),
        (
            "comment",
            "<a><!-- 1234567890 --></a>".into(),
            "maxCommentLength",
        ),
        ("malformed", "<a><b></a></b>".into(), "not well-formed"),
    ];
    for (what, body, rule) in &cases {
        let target = format!("/soap/{what}");
        let r = post(&gw, &target, &[xml], body.as_bytes());
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        let message = r.json()["error"].as_str().unwrap_or("").to_string();
        assert!(message.contains(rule), "{what}: {message}");
        assert_eq!(received(&backend, &target), 0, "{what} reached the backend");
    }
    for ct in [
        "application/xml",
        "application/soap+xml",
        "APPLICATION/ATOM+XML",
    ] {
        let r = post(
            &gw,
            "/soap/typed",
            &[("content-type", ct)],
            laughs.as_bytes(),
        );
        assert_eq!(r.status, 400, "{ct}");
    }
    let r = post(&gw, "/soap/untyped", &[], laughs.as_bytes());
    assert_eq!(r.status, 400, "an undeclared body opening with '<' is XML");
    assert_eq!(
        received(&backend, "/soap/typed") + received(&backend, "/soap/untyped"),
        0
    );
    let r = post(
        &gw,
        "/soap/json",
        &[("content-type", "application/json")],
        b"{\"a\": 1}",
    );
    assert_eq!(r.status, 200, "JSON passes an XML policy");
    let r = post(
        &gw,
        "/soap/gz",
        &[xml, ("content-encoding", "deflate")],
        b"x",
    );
    assert_eq!(r.status, 415);
    let rejections = gw
        .metric("flexgw_policy_rejections_total{route=\"soap\",policy=\"xml-threat-protection\"}");
    assert!(rejections >= 13.0, "{rejections}");
}

#[test]
fn flex_threat_protection_policies_run_from_a_flex_file() {
    let backend = Backend::echo();
    let policies = "    - policyRef: {name: json-threat-protection-flex}
      config:
        maxContainerDepth: 3
        maxObjectEntryCount: 2
        maxObjectEntryNameLength: 7
        maxArrayElementCount: 4
        maxStringValueLength: 28
    - policyRef: {name: xml-threat-protection-flex}
      config: {maxNodeDepth: 1, maxAttributeCountPerElement: 1, maxChildCount: 2, maxTextLength: 20, maxAttributeLength: 20, maxCommentLength: 20}
";
    let api = flex_api("players", "{port}", &backend.url(), policies);
    let gw = Gateway::start_files(
        &[("api.yaml", api), ("server.yaml", SERVER_ONLY.to_string())],
        &[],
    );
    // Flex's documentation's example payload sits exactly at these limits
    let players = br#"{"Players":[{"Name":"Sachin","Email":"sachin.tendulkar@example.com"},
        {"Name":"Suryakumar","email":"Surya@example.com"},{"Name":"Bhuvi","email":"bhuvi@example.com"},
        {"Name":"Jonty","Email":"jonty@example.com"}]}"#;
    let r = post(&gw, "/api/players", &[JSON], players);
    assert_eq!(r.status, 200, "{}", r.text());
    let five = br#"{"Players":[{},{},{},{},{}]}"#;
    let r = post(&gw, "/api/players", &[JSON], five);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("maxArrayElementCount"), "{}", r.text());
    let r = post(
        &gw,
        "/api/doc",
        &[("content-type", "application/xml")],
        b"<a><b/></a>",
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("maxNodeDepth"), "{}", r.text());
    let r = post(
        &gw,
        "/api/doc",
        &[("content-type", "application/xml")],
        b"<a b=\"1\">text</a>",
    );
    assert_eq!(r.status, 200);

    // /config shows both, with Flex's field names
    let config = gw.admin("/config").json();
    let text = config.to_string();
    assert!(text.contains("\"maxArrayElementCount\":4"), "{text}");
    assert!(text.contains("\"maxCommentLength\":20"), "{text}");
}

#[test]
fn validate_names_a_misspelt_threat_protection_field() {
    let dir = temp_dir("threat-validate");
    let api = flex_api(
        "shop",
        "8080",
        "http://127.0.0.1:9000",
        "    - policyRef: {name: json-threat-protection-flex}
      config: {maxContainerDepht: 3, maxArrayElementCount: -2}
    - policyRef: {name: xml-threat-protection-flex}
      config: {maxNodeDepth: \"3\"}
",
    );
    let path = dir.join("api.yaml");
    std::fs::write(&path, api).expect("write");
    let (ok, out, err) = validate(&path);
    let all = format!("{out}{err}");
    assert!(!ok, "{all}");
    for expect in [
        "maxContainerDepht: unknown field (did you mean `maxContainerDepth`?)",
        "maxArrayElementCount: expected an integer from -1 to",
        "maxNodeDepth: expected an integer from -1 to 100000",
    ] {
        assert!(all.contains(expect), "missing {expect:?} in:\n{all}");
    }
}
