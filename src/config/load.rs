//! Reading configuration from disk: a file, or a directory read as conf.d
//! (every `*.yaml` / `*.yml`, in name order, multi-document files allowed),
//! or several of them (`-c` given more than once: read in the order given,
//! one model), then the checks across routes and documents, producing the
//! [`Config`].

use super::decode::{ConfigError, ConfigErrors, Decoder};
use super::model::{
    ClientLimits, Config, LimitSettings, Listener, PathPattern, PolicySpec, Route, ServerSettings,
    ServiceConfig,
};
use super::schema::{decode_document, GatewayDoc};
use super::sources::{Document, Source};
use super::yaml::{parse_documents, Pos};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Load and validate everything under `paths`; on failure, every problem
/// found.
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    load_sources(paths).0
}

/// [`load`], and the files it read (their hashes and documents).
pub fn load_sources(paths: &[PathBuf]) -> (Result<Config, ConfigErrors>, Vec<Source>) {
    let files = match list_files(paths) {
        Ok(files) => files,
        Err(e) => return (Err(e), Vec::new()),
    };
    let mut sources = Vec::new();
    let mut docs = Vec::new();
    let mut flex = Vec::new();
    let mut errors = Vec::new();
    let mut secrets = Vec::new();
    let mut referenced = Vec::new();
    let mut notices = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let mut d = decode_source(&shown, &text);
                sources.push(Source {
                    name: super::sources::name_under(paths, file),
                    file: shown.clone(),
                    sha256: super::sources::sha256(text.as_bytes()),
                    documents: std::mem::take(&mut d.documents),
                });
                docs.append(&mut d.docs);
                flex.append(&mut d.flex);
                notices.append(&mut d.notices);
                errors.append(&mut d.errors);
                secrets.append(&mut d.secrets);
                referenced.append(&mut d.files);
            }
            Err(e) => {
                errors.push(file_error(&shown, format!("cannot read: {e}")));
                sources.push(Source {
                    name: super::sources::name_under(paths, file),
                    file: shown,
                    sha256: String::new(),
                    documents: Vec::new(),
                });
            }
        }
    }
    let mut config = finish(docs, flex, &mut errors);
    config.secrets = secrets;
    config.referenced_files = referenced;
    notices.append(&mut config.notices);
    config.notices = notices;
    let loaded = if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    };
    (loaded, sources)
}

/// Load from in-memory text, for tests and tools; `name` is shown in errors.
pub fn load_str(name: &str, text: &str) -> Result<Config, ConfigErrors> {
    let Decoded {
        docs,
        flex,
        mut errors,
        secrets,
        files: _,
        mut notices,
        documents: _,
    } = decode_source(name, text);
    let mut config = finish(docs, flex, &mut errors);
    notices.append(&mut config.notices);
    config.notices = notices;
    config.secrets = secrets;
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn file_error(file: &str, message: String) -> ConfigError {
    ConfigError {
        file: file.to_string(),
        pos: Pos::default(),
        path: String::new(),
        message,
    }
}

/// Config paths as messages name them: `a, b, c`.
pub fn shown(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// The files a load reads: `path` itself, or the `*.yaml`/`*.yml` files of a
/// directory in name order (hidden files skipped).
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ConfigErrors> {
    let mut files = Vec::new();
    for path in paths {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path)
            .map_err(|e| ConfigErrors(vec![file_error(&shown, format!("cannot read: {e}"))]))?;
        if !meta.is_dir() {
            files.push(path.to_path_buf());
            continue;
        }
        let mut found = Vec::new();
        walk(path, &mut found)?;
        found.sort();
        files.extend(found);
    }
    // one file named twice (a directory and a file in it) is read once
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    if files.is_empty() {
        let what = match paths.len() {
            1 => "no *.yaml or *.yml files in this directory",
            _ => "no configuration: no *.yaml or *.yml file in any of these (mount a file or a directory into one of them)",
        };
        return Err(ConfigErrors(vec![file_error(&shown(paths), what.into())]));
    }
    Ok(files)
}

/// The Flex resources compiled into documents, then everything assembled.
fn finish(
    mut docs: Vec<GatewayDoc>,
    flex: Vec<super::flex::Resource>,
    errors: &mut Vec<ConfigError>,
) -> Config {
    let mut compiled = super::flex::compile(&flex, errors);
    if !compiled.server.is_empty() {
        // Configuration resources over `spec.server` (or the defaults)
        match docs.iter_mut().find_map(|d| d.server.as_mut()) {
            Some((s, _)) => compiled.server.apply(s),
            None => {
                let mut s = ServerSettings::default();
                compiled.server.apply(&mut s);
                // the carrier of Flex services and settings is the last
                if let Some(carrier) = compiled.docs.last_mut() {
                    carrier.server = Some((s, carrier.pos));
                }
            }
        }
    }
    docs.extend(compiled.docs);
    let mut config = assemble(&docs, errors);
    config.notices = compiled.notices;
    config.log_level = compiled.log_level;
    config.logging = compiled.logging;
    if config.server.tracing.is_none() {
        let traced = config.listeners.iter().flat_map(|l| &l.routes).filter(|r| {
            r.policies
                .iter()
                .any(|p| matches!(p.config, crate::policy::PolicyConfig::Tracing(_)))
        });
        let notes: Vec<String> = traced
            .map(|r| format!(
                "route {:?}: its tracing policy does nothing while tracing is not configured (spec.server.tracing, or a Configuration's spec.tracing)",
                r.id
            ))
            .collect();
        config.notices.extend(notes);
    }
    config
}

/// The `*.yaml`/`*.yml` files under `dir`, subdirectories included (Flex
/// puts files in `conf.d/custom/`, `conf.d/policies/`); hidden files and
/// directories are skipped.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ConfigErrors> {
    let shown = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ConfigErrors(vec![file_error(&shown, format!("cannot list: {e}"))]))?;
    for p in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.is_file()
            && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
        {
            out.push(p);
        }
    }
    Ok(())
}

struct Decoded {
    docs: Vec<GatewayDoc>,
    /// Flex Local Mode resources, compiled once every file is read.
    flex: Vec<super::flex::Resource>,
    errors: Vec<ConfigError>,
    secrets: Vec<String>,
    files: Vec<PathBuf>,
    notices: Vec<String>,
    documents: Vec<Document>,
}

fn decode_source(file: &str, text: &str) -> Decoded {
    let mut d = Decoder::new(file);
    let nodes = match parse_documents(text) {
        Ok(nodes) => nodes,
        Err(e) => {
            let mut message = format!("invalid YAML: {}", e.message);
            if text.contains(['\u{201C}', '\u{201D}']) {
                message.push_str(
                    " (the file contains typographic quotes \u{201C} \u{201D}, probably pasted from a web page: replace them with straight quotes \")",
                );
            }
            d.error(e.pos, "", message);
            return Decoded {
                docs: Vec::new(),
                flex: Vec::new(),
                errors: d.errors,
                secrets: d.secrets,
                files: d.files,
                notices: d.notices,
                documents: Vec::new(),
            };
        }
    };
    if nodes.is_empty() {
        d.error(Pos::default(), "", "no YAML document in this file");
    }
    let mut docs = Vec::new();
    let mut flex = Vec::new();
    for n in &nodes {
        match super::flex::resources::flex_kind(n) {
            Some(kind) => flex.extend(super::flex::decode_resource(&mut d, n, kind)),
            None => docs.extend(decode_document(&mut d, n)),
        }
    }
    Decoded {
        docs,
        flex,
        errors: d.errors,
        secrets: d.secrets,
        files: d.files,
        notices: d.notices,
        documents: super::sources::documents(&nodes),
    }
}

/// Checks across documents, then the model: listeners merged by port, every
/// route attached to each listener of its document.
fn assemble(docs: &[GatewayDoc], errors: &mut Vec<ConfigError>) -> Config {
    let mut err = |file: &str, pos: Pos, path: &str, message: String| {
        errors.push(ConfigError {
            file: file.to_string(),
            pos,
            path: path.to_string(),
            message,
        })
    };
    let at = |doc: &GatewayDoc, pos: Pos| format!("{}:{}:{}", doc.file, pos.line, pos.col);

    // server settings: at most one document may set them
    let mut server: Option<(ServerSettings, String)> = None;
    for doc in docs {
        if let Some((s, pos)) = &doc.server {
            match &server {
                Some((_, first)) => err(&doc.file, *pos, "spec.server", format!("server settings are already given at {first}; set them in one document only")),
                None => server = Some((s.clone(), at(doc, *pos))),
            }
        }
    }

    // gateway names and route ids are unique across all files
    let mut names: HashMap<&str, String> = HashMap::new();
    let mut ids: HashMap<&str, String> = HashMap::new();
    for doc in docs {
        if !doc.name.is_empty() {
            if let Some(first) = names.get(doc.name.as_str()) {
                err(
                    &doc.file,
                    doc.pos,
                    "metadata.name",
                    format!("gateway name {:?} is already used at {first}", doc.name),
                );
            } else {
                names.insert(&doc.name, at(doc, doc.pos));
            }
        }
        for r in &doc.route_ids {
            if let Some(first) = ids.get(r.id.as_str()) {
                err(
                    &doc.file,
                    r.pos,
                    &r.path,
                    format!("duplicate route id {:?} (first defined at {first})", r.id),
                );
            } else {
                ids.insert(&r.id, at(doc, r.pos));
            }
        }
    }

    // services: names unique across documents; routes name them
    let mut services: Vec<Arc<ServiceConfig>> = Vec::new();
    let mut service_at: HashMap<String, String> = HashMap::new();
    for doc in docs {
        for (name, pos, path) in &doc.service_names {
            if let Some(first) = service_at.get(name) {
                err(
                    &doc.file,
                    *pos,
                    path,
                    format!("service name {name:?} is already used at {first}"),
                );
            } else {
                service_at.insert(name.clone(), at(doc, *pos));
            }
        }
        for s in &doc.services {
            if !services.iter().any(|c| c.name == s.config.name) {
                services.push(Arc::new(s.config.clone()));
            }
        }
    }
    let declared: Vec<&str> = service_at.keys().map(String::as_str).collect();
    for doc in docs {
        for r in &doc.routes {
            for (name, pos, path) in &r.upstream.references {
                if !service_at.contains_key(name) {
                    let hint = match super::decode::suggest(name, &declared) {
                        Some(s) => format!(" (did you mean {s:?}?)"),
                        None if declared.is_empty() => " (declare it under spec.services)".into(),
                        None => format!(" (declared: {})", {
                            let mut d = declared.clone();
                            d.sort();
                            d.join(", ")
                        }),
                    };
                    err(
                        &doc.file,
                        *pos,
                        path,
                        format!("unknown service {name:?}{hint}"),
                    );
                }
            }
            if let Some(inline) = &r.upstream.inline {
                services.push(Arc::new(inline.clone()));
            }
        }
    }

    let shared_storage = server.as_ref().and_then(|(s, _)| s.shared_storage.clone());
    let upstream_timeouts = server
        .as_ref()
        .map(|(s, _)| s.upstream_timeouts)
        .unwrap_or_default();
    let server_limits = server
        .as_ref()
        .map_or_else(ClientLimits::default, |(s, _)| s.limits);
    // listeners merged by port; the same port must mean the same address
    let mut listeners: Vec<(Listener, String)> = Vec::new();
    let mut by_port: HashMap<u16, usize> = HashMap::new();
    // (listener index, host, pattern) -> (methods, where, route id) for clash detection
    type Claim = (Option<Vec<http::Method>>, String, String);
    let mut claims: HashMap<(usize, Option<String>, PathPattern), Vec<Claim>> = HashMap::new();
    for doc in docs {
        let mut mine = Vec::new();
        for l in &doc.listeners {
            let addr = SocketAddr::new(l.host, l.port);
            match by_port.get(&l.port) {
                Some(&i) => {
                    let (existing, first) = &listeners[i];
                    if existing.addr != addr {
                        err(&doc.file, l.pos, &l.path, format!(
                            "port {} is already declared for host {} at {first}; documents sharing a port must use the same host",
                            l.port, existing.addr.ip()
                        ));
                        continue;
                    }
                    if l.limits != LimitSettings::default()
                        && existing.limits != l.limits.over(server_limits)
                    {
                        err(&doc.file, l.pos, &format!("{}.limits", l.path), format!(
                            "port {} is already declared with other limits at {first}; give a shared port its limits in one document",
                            l.port
                        ));
                    }
                    if existing.h2c != l.h2c {
                        err(&doc.file, l.pos, &format!("{}.h2c", l.path), format!(
                            "port {} is already declared with h2c: {} at {first}; give a shared port its h2c in one document",
                            l.port, existing.h2c
                        ));
                    }
                    if existing.tls != l.tls {
                        err(&doc.file, l.pos, &l.path, format!(
                            "port {} is already declared with {} at {first}; give a shared port its protocol and tls in one way",
                            l.port,
                            if existing.tls.is_some() { "protocol HTTPS and its tls" } else { "protocol HTTP" }
                        ));
                    }
                    if !mine.contains(&i) {
                        mine.push(i);
                    }
                }
                None => {
                    by_port.insert(l.port, listeners.len());
                    mine.push(listeners.len());
                    listeners.push((
                        Listener {
                            name: l.name.clone(),
                            addr,
                            routes: Vec::new(),
                            limits: l.limits.over(server_limits),
                            tls: l.tls.clone(),
                            h2c: l.h2c,
                        },
                        at(doc, l.pos),
                    ));
                }
            }
        }
        for r in &doc.routes {
            // document-level policies first, then the route's; `order` decides
            let mut policies: Vec<PolicySpec> =
                doc.policies.iter().chain(&r.policies).cloned().collect();
            for p in &mut policies {
                let scope = match &p.document {
                    Some(g) => format!("gateway:{g}"),
                    None => format!("route:{}", r.id),
                };
                p.config.bind(&scope, shared_storage.as_ref());
            }
            policies.sort_by_key(|p| p.sort_key());
            let route = Arc::new(Route {
                id: r.id.clone(),
                gateway: doc.name.clone(),
                paths: r.paths.iter().map(|(p, _)| p.clone()).collect(),
                methods: r.methods.clone(),
                host: r.host.clone(),
                upstream: crate::config::model::RouteUpstream {
                    timeouts: r.upstream.timeouts.resolve(upstream_timeouts),
                    ..r.upstream.upstream.clone()
                },
                max_body_size: r.max_body_size,
                allow_encoded_slashes: r.allow_encoded_slashes,
                allow_path_parameters: r.allow_path_parameters,
                policies,
                flex: r.flex.clone(),
            });
            for &i in &mine {
                for (k, (pattern, pos)) in r.paths.iter().enumerate() {
                    let key = (i, r.host.clone(), pattern.clone());
                    let here = at(doc, *pos);
                    let list = claims.entry(key).or_default();
                    for (methods, first, other) in list.iter() {
                        if overlap(methods, &r.methods) {
                            err(&doc.file, *pos, &format!("{}.path[{k}]", r.path), format!(
                                "path {pattern} clashes with route {other:?} at {first} on listener port {} (same path and host, overlapping methods)",
                                listeners[i].0.addr.port()
                            ));
                        }
                    }
                    list.push((r.methods.clone(), here, r.id.clone()));
                }
                listeners[i].0.routes.push(route.clone());
            }
        }
    }
    let settings = server.map(|(s, _)| s).unwrap_or_default();
    if let Some(admin) = settings.admin {
        let doc = docs.iter().find(|d| d.server.is_some());
        if let Some((l, _)) = listeners
            .iter()
            .find(|(l, _)| l.addr.port() == admin.port())
        {
            let (file, pos) = doc.map_or(("", Pos::default()), |d| {
                (
                    d.file.as_str(),
                    d.server.as_ref().map_or(d.pos, |(_, p)| *p),
                )
            });
            err(file, pos, "spec.server.admin.address", format!(
                "admin port {} is also the port of listener {}; pick another (or `admin: {{enabled: false}}`)",
                admin.port(), l.name
            ));
        }
    }
    Config {
        server: settings,
        listeners: listeners.into_iter().map(|(l, _)| l).collect(),
        gateways: docs
            .iter()
            .filter(|d| !d.name.is_empty())
            .map(|d| d.name.clone())
            .collect(),
        services,
        secrets: Vec::new(),
        referenced_files: Vec::new(),
        notices: Vec::new(),
        log_level: None,
        logging: None,
    }
}

fn overlap(a: &Option<Vec<http::Method>>, b: &Option<Vec<http::Method>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

#[cfg(test)]
mod tests;
