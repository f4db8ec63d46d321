//! OpenAPI request validation (`openapi-validation`, Flex's
//! `spec-validation-flex`) against the walkthrough's product catalog
//! described in OpenAPI 3.1 (tests/specs/catalog.openapi.yaml): what the
//! client is told when a request breaks the document, and that nothing
//! that breaks it reaches the backend — a body is held until checked.

use crate::support::*;

fn spec_path() -> String {
    repo_path("tests/specs/catalog.openapi.yaml")
        .display()
        .to_string()
}

fn policies(extra: &str) -> String {
    format!(
        r#"    - policyRef: {{name: spec-validation-flex}}
      config:
        source: context
        spec: "{}"
        blockOperation: true
        strictParamsValidation: true
{extra}"#,
        spec_path()
    )
}

fn start(backend: &Backend, extra: &str) -> Gateway {
    serve_flex_api("catalog", &backend.url(), &policies(extra))
}

/// The error body's message.
fn why(r: &Response) -> String {
    r.json()["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn requests_that_break_the_document_are_refused_naming_the_field_and_rule() {
    let backend = Backend::echo();
    let gw = start(&backend, "");
    let mut c = gw.connect();
    let get =
        |c: &mut Client, path: &str, headers: &[(&str, &str)]| c.request("GET", path, headers, b"");

    // what the document allows goes through
    for path in [
        "/api/products",
        "/api/products?category=networking&limit=10",
        "/api/products?tag=edge&tag=api-mgmt",
        "/api/products/2",
        "/api/products/featured",
    ] {
        let r = get(&mut c, path, &[("x-api-version", "v2")]);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    let through = backend.seen.lock().unwrap().len();
    assert_eq!(through, 5);

    for (path, headers, status, needle) in [
        ("/api/orders", vec![], 400, "matches no path of the specification (path)"),
        ("/api/products/0", vec![], 400, "path parameter \"id\": 0 is less than the minimum of 1 (minimum)"),
        ("/api/products/two", vec![], 400, "path parameter \"id\": \"two\" is not of type integer (type)"),
        ("/api/products?limit=1000", vec![], 400, "query parameter \"limit\": 1000 is greater than the maximum of 100 (maximum)"),
        ("/api/products?category=food", vec![], 400, "query parameter \"category\": \"food\" is not one of the allowed values (enum)"),
        ("/api/products?tag=a&tag=b&tag=c&tag=d", vec![], 400, "(maxItems)"),
        ("/api/products?tag=Not_Ok", vec![], 400, "query parameter \"tag\"/0: does not match"),
        ("/api/products?debug=1", vec![], 400, "query parameter \"debug\": is not a parameter of the operation (strictParamsValidation)"),
        ("/api/products", vec![("x-api-version", "2")], 400, "header parameter \"x-api-version\": does not match"),
    ] {
        let r = get(&mut c, path, &headers);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(why(&r).contains(needle), "{path}: {}", why(&r));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = c.request("DELETE", "/api/products/2", &[], b"");
    assert_eq!(r.status, 400);
    assert!(
        why(&r).contains("DELETE is not an operation of /products/{id} (it has GET, PUT)"),
        "{}",
        why(&r)
    );
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        through,
        "nothing refused went upstream"
    );
}

#[test]
fn json_bodies_are_held_checked_and_forwarded_whole() {
    let backend = Backend::echo();
    let gw = start(&backend, "        maxBodySize: 64KB\n");
    let mut c = gw.connect();
    let json = [("content-type", "application/json")];
    let good = br#"{"name":"Edge Cache","price":49.5,"category":"gateway","status":null,"released":"2026-12-04","tags":["a","b"],"variants":[{"sku":"ABC-001","qty":2}]}"#;
    let r = c.request("POST", "/api/products", &json, good);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        backend.last().body,
        good.to_vec(),
        "the body went upstream as sent"
    );

    for (body, needle) in [
        (&br#"{"price":1}"#[..], "request body /: \"name\" is required (required)"),
        (br#"{"name":"x","price":-1}"#, "request body /price: -1 is less than the minimum of 0 (minimum)"),
        (br#"{"name":"x","price":100000}"#, "request body /price: 100000 is not less than 100000 (exclusiveMaximum)"),
        (br#"{"name":"x","price":1,"owner":"me"}"#, "request body /: \"owner\" is not an allowed property (additionalProperties)"),
        (br#"{"name":"x","price":1,"released":"2026-13-01"}"#, "request body /released: \"2026-13-01\" is not a valid date (format)"),
        (br#"{"name":"x","price":1,"tags":["a","a"]}"#, "(uniqueItems)"),
        (br#"{"name":"x","price":1,"variants":[{"sku":"ABC-001","qty":1},{"sku":"abc","qty":1}]}"#, "request body /variants/1/sku: does not match"),
        (br#"{"name":"x","price":1,"variants":[{"sku":"ABC-001","qty":0}]}"#, "request body /variants/0/qty: 0 is less than the minimum of 1 (minimum)"),
        (br#"{"name":"x","price":1,"status":"alpha"}"#, "request body /status: \"alpha\" is not one of the allowed values (enum)"),
        (br#"{"name":"x","price":"#, "request body: is not JSON"),
    ] {
        // a refused body closes its connection (as any refusal in a body)
        let r = gw.connect().request("POST", "/api/products", &json, body);
        assert_eq!(r.status, 400, "{}: {}", String::from_utf8_lossy(body), r.text());
        assert!(why(&r).contains(needle), "{}", why(&r));
    }
    // a required body missing; a media type the operation does not take
    let mut c = gw.connect();
    let r = c.request("POST", "/api/products", &json, b"");
    assert!(
        why(&r).contains("request body: is required (required)"),
        "{}",
        why(&r)
    );
    let r = c.request(
        "POST",
        "/api/products",
        &[("content-type", "text/plain")],
        b"name=x",
    );
    assert_eq!(r.status, 400);
    assert!(why(&r).contains("(content-type)"), "{}", why(&r));
    assert_eq!(
        backend.seen.lock().unwrap().len(),
        1,
        "only the valid body went upstream"
    );

    // over the bound: 413, and the held part never reaches the backend
    let mut big = br#"{"name":"x","price":1,"tags":["#.to_vec();
    while big.len() < 200_000 {
        big.extend_from_slice(br#""abcdefgh","#);
    }
    big.extend_from_slice(br#""z"]}"#);
    let mut c = gw.connect();
    let r = c.request("PUT", "/api/products/2", &json, &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(why(&r).contains("(maxBodySize)"), "{}", why(&r));
    assert_eq!(backend.seen.lock().unwrap().len(), 1);
    // nested 10,000 deep: refused, the gateway still answers
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut c = gw.connect();
    let r = c.request("PUT", "/api/products/2", &json, deep.as_bytes());
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(gw.connect().get("/api/products/1").status, 200);
}

/// `blockOperation: false`: what fails is logged, and goes through.
#[test]
fn not_blocking_logs_and_lets_through() {
    let backend = Backend::echo();
    let gw = serve_flex_api(
        "catalog",
        &backend.url(),
        &format!(
            r#"    - policyRef: {{name: spec-validation-flex}}
      config:
        spec: "{}"
        blockOperation: false
"#,
            spec_path()
        ),
    );
    let mut c = gw.connect();
    let body = br#"{"name":"x","price":-5}"#;
    let r = c.request(
        "POST",
        "/api/products",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "lenient-1"),
        ],
        body,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(backend.last().body, body.to_vec());
    assert_eq!(c.get("/api/products/zero").status, 200);
    let mut log = String::new();
    wait_until(
        std::time::Duration::from_secs(5),
        "the validation lines",
        || {
            log = gw.log_text();
            log.matches("OpenAPI validation (not blocking)").count() >= 2
        },
    );
    assert!(
        log.contains("[req: lenient-1]")
            && log.contains("request body /price: -5 is less than the minimum of 0 (minimum)"),
        "{log}"
    );
}

#[test]
fn a_document_that_does_not_load_is_a_validate_error() {
    let dir = temp_dir("openapi");
    for (spec, needle) in [
        ("/nonexistent/spec.yaml", "cannot read /nonexistent/spec.yaml"),
        ("\"{\\\"swagger\\\": \\\"2.0\\\"}\"", "Swagger 2.0"),
        (
            "\"{\\\"openapi\\\": \\\"3.0.3\\\", \\\"paths\\\": {\\\"/a\\\": {\\\"get\\\": {\\\"parameters\\\": [{\\\"name\\\": \\\"q\\\", \\\"in\\\": \\\"query\\\", \\\"schema\\\": {\\\"$ref\\\": \\\"#/components/schemas/Nope\\\"}}]}}}}\"",
            "does not resolve within the document",
        ),
    ] {
        let file = flex_api_file(
            &dir,
            &format!(
                "    - policyRef: {{name: spec-validation-flex}}\n      config:\n        spec: {spec}\n        blockOperation: true\n"
            ),
        );
        let (ok, out, err) = validate(&file);
        let text = err + &out;
        assert!(!ok, "{text}");
        assert!(text.contains("config.spec") && text.contains(needle), "{needle}: {text}");
    }
}
