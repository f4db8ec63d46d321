//! Flex resources → the documents `load.rs` assembles: one document per
//! `ApiInstance` (its listener, its routes in Flex order, the policies bound
//! to it) and one carrying every service and the `Configuration` settings.
//! References (targets, destinations) are resolved here, with every
//! problem reported at its file:line:col.

use super::catalog::{Bound, CircuitPatch};
use super::instance::{compile_instance, targets, Listening, Resolve};
use super::resources::{qualified, Binding, ConfigRes, Instance, Meta, Resource, Target};
use crate::config::decode::{suggest, ConfigError};
use crate::config::model::{ServerSettings, ServiceConfig, TimeoutSettings};
use crate::config::schema::GatewayDoc;
use crate::config::services::ServiceSpec;
use crate::config::yaml::Pos;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// What the Flex resources compile to.
#[derive(Debug, Default)]
pub struct Compiled {
    pub docs: Vec<GatewayDoc>,
    /// Said once at start (and by `validate`): what is accepted but not applied.
    pub notices: Vec<String>,
    pub log_level: Option<log::LevelFilter>,
    /// Flex's `logging` outputs.
    pub logging: Option<crate::config::logging::LoggingSettings>,
    /// `Configuration` settings, laid over the server settings (of a
    /// `kind: Gateway` document's `spec.server`, or the defaults).
    pub server: ServerPatch,
}

/// The server settings `Configuration` resources give.
#[derive(Debug, Default, Clone)]
pub struct ServerPatch {
    pub shared_storage: Option<crate::store::RedisSettings>,
    pub body_timeout: Option<Duration>,
    pub admin: Option<std::net::SocketAddr>,
    /// `Configuration.spec.tracing` (an OpenTelemetry provider).
    pub tracing: Option<crate::config::model::TracingSettings>,
}

impl ServerPatch {
    pub fn apply(&self, s: &mut ServerSettings) {
        if let Some(r) = &self.shared_storage {
            s.shared_storage = Some(r.clone());
        }
        if let Some(t) = self.body_timeout {
            s.limits.body_timeout = t;
        }
        if let Some(a) = self.admin {
            s.admin = Some(a);
        }
        if let Some(t) = &self.tracing {
            s.tracing = Some(t.clone());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.shared_storage.is_none()
            && self.body_timeout.is_none()
            && self.admin.is_none()
            && self.tracing.is_none()
    }
}

pub(super) struct Errors<'e>(pub(super) &'e mut Vec<ConfigError>);

impl Errors<'_> {
    pub(super) fn at(&mut self, file: &str, pos: Pos, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError {
            file: file.to_string(),
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }
}

pub(super) fn here(m: &Meta, pos: Pos) -> String {
    format!("{}:{}:{}", m.file, pos.line, pos.col)
}

pub fn compile(resources: &[Resource], errors: &mut Vec<ConfigError>) -> Compiled {
    let resolved = super::extension::resolve(resources, errors);
    let resources = resolved.as_slice();
    let mut err = Errors(errors);
    let mut out = Compiled::default();
    if resources.is_empty() {
        return out;
    }
    check_unique(resources, &mut err);
    let instances: Vec<&Instance> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Instance(i) => Some(i),
            _ => None,
        })
        .collect();
    let bindings: Vec<&Binding> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Binding(b) => Some(b.as_ref()),
            _ => None,
        })
        .collect();
    let mut services = collect_services(resources, &instances, &mut err);
    let service_names: Vec<String> = services.keys().cloned().collect();
    let resolve = |err: &mut Errors, b: &Binding, r: &super::resources::Ref| {
        resolve_service(err, b, r, &service_names)
    };
    bind_services(&bindings, &instances, &mut services, &mut err, &resolve);
    let configs: Vec<&ConfigRes> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Configuration(c) => Some(&**c),
            _ => None,
        })
        .collect();
    let response_timeout = super::configuration::apply(&configs, &mut out, &mut err);
    check_base_paths(&instances, &mut err);
    let port_tls = port_tls(&instances, &bindings, &mut err);
    let timeouts = TimeoutSettings {
        request: Some(response_timeout),
        ..TimeoutSettings::default()
    };
    let mut derived: Vec<ServiceConfig> = Vec::new();
    for inst in &instances {
        let tls = port_tls.get(&inst.port).map(|(t, _)| t.clone());
        let listening = Listening { timeouts, tls };
        let built = compile_instance(
            inst,
            &bindings,
            &services,
            &mut derived,
            listening,
            &mut err,
            &resolve,
        );
        out.docs.extend(built);
    }
    out.docs.extend(carriers(resources, services, derived));
    out
}

/// One resource per kind, namespace and name.
fn check_unique(resources: &[Resource], err: &mut Errors) {
    let mut seen: HashMap<(&str, &str, &str), String> = HashMap::new();
    for r in resources {
        let m = r.meta();
        let key = (m.kind, m.namespace.as_str(), m.name.as_str());
        match seen.get(&key) {
            Some(first) => err.at(
                &m.file,
                m.pos,
                "metadata.name",
                format!("{} {:?} is already defined at {first}", m.kind, m.display()),
            ),
            None => {
                seen.insert(key, here(m, m.pos));
            }
        }
    }
}

/// Service resources, and each instance's inline services (`<instance>-<name>`).
fn collect_services(
    resources: &[Resource],
    instances: &[&Instance],
    err: &mut Errors,
) -> BTreeMap<String, (ServiceConfig, Meta, Pos)> {
    let mut services: BTreeMap<String, (ServiceConfig, Meta, Pos)> = BTreeMap::new();
    for r in resources {
        if let Resource::Service(s) = r {
            let name = s.meta.display();
            let mut c = ServiceConfig::inline("", s.upstream.clone());
            c.name = name.clone();
            services.insert(name, (c, s.meta.clone(), s.meta.pos));
        }
    }
    for i in instances {
        for s in &i.services {
            let name = qualified(&i.meta.namespace, &format!("{}-{}", i.meta.name, s.name));
            let mut c = ServiceConfig::inline("", s.upstream.clone());
            c.name = name.clone();
            if let Some((_, m, _)) = services.get(&name) {
                err.at(
                    &i.meta.file,
                    s.pos,
                    &format!("spec.services.{}", s.name),
                    format!(
                        "inline service {:?} is the Service {name:?} already defined at {}",
                        s.name,
                        here(m, m.pos)
                    ),
                );
                continue;
            }
            services.insert(name, (c, i.meta.clone(), s.pos));
        }
    }
    services
}

/// Bindings to Services (`circuit-breaker-flex`, `tls-outbound`) applied to
/// them; bindings whose target kind does not fit their policy, and targets
/// that do not exist, reported.
fn bind_services(
    bindings: &[&Binding],
    instances: &[&Instance],
    services: &mut BTreeMap<String, (ServiceConfig, Meta, Pos)>,
    err: &mut Errors,
    resolve: &Resolve,
) {
    let mut patches: Vec<(String, CircuitPatch)> = Vec::new();
    let mut tls_out: Vec<(String, crate::config::model::UpstreamTls, bool)> = Vec::new();
    for b in bindings {
        match (&b.target, &b.policy) {
            (Target::Service(r), Bound::CircuitBreaker(p)) => {
                if let Some(name) = resolve(err, b, r) {
                    patches.push((name, *p));
                }
            }
            (Target::Service(r), Bound::TlsOutbound(t, h2)) => {
                if let Some(name) = resolve(err, b, r) {
                    tls_out.push((name, t.as_ref().clone(), *h2));
                }
            }
            (_, Bound::TlsOutbound(..)) => err.at(
                &b.meta.file,
                b.pos,
                &format!("{}.targetRef", b.path),
                "tls-outbound is bound to a Service (targetRef: {kind: Service, name: ...})",
            ),
            (Target::Service(r), _) => err.at(
                &b.meta.file,
                r.pos,
                &r.path,
                format!(
                    "policy {:?} applies to an ApiInstance (only circuit-breaker-flex is bound to a Service)",
                    b.policy_name
                ),
            ),
            (_, Bound::CircuitBreaker(_)) => err.at(
                &b.meta.file,
                b.pos,
                &format!("{}.targetRef", b.path),
                "circuit-breaker-flex is bound to a Service (targetRef: {kind: Service, name: ...})",
            ),
            (Target::Instance(r), _) => {
                let name = qualified(&r.namespace, &r.name);
                if !instances.iter().any(|i| i.meta.display() == name) {
                    let known: Vec<String> = instances.iter().map(|i| i.meta.display()).collect();
                    let known: Vec<&str> = known.iter().map(String::as_str).collect();
                    let hint = match suggest(&name, &known) {
                        Some(s) => format!(" (did you mean {s:?}?)"),
                        None if known.is_empty() => " (no ApiInstance is defined)".into(),
                        None => format!(" (defined: {})", known.join(", ")),
                    };
                    err.at(
                        &b.meta.file,
                        r.pos,
                        &r.path,
                        format!("unknown ApiInstance {name:?}{hint}"),
                    );
                    // its destinations are still checked in this run
                    if let Bound::Route(targets) = &b.policy {
                        for t in targets {
                            resolve(err, b, &t.service);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    for (name, t, h2) in tls_out {
        if let Some((c, _, _)) = services.get_mut(&name) {
            c.tls = t;
            c.http2 = h2 && c.targets.iter().all(|t| t.upstream.tls);
        }
    }
    for (name, p) in patches {
        if let Some((c, _, _)) = services.get_mut(&name) {
            let cb = &mut c.circuit;
            cb.max_connections = p.max_connections.unwrap_or(cb.max_connections);
            cb.max_pending = p.max_pending.unwrap_or(cb.max_pending);
            cb.max_requests = p.max_requests.unwrap_or(cb.max_requests);
            cb.max_retries = p.max_retries.unwrap_or(cb.max_retries);
        }
    }
}

/// Instances sharing a port need base paths that do not nest.
fn check_base_paths(instances: &[&Instance], err: &mut Errors) {
    for (n, a) in instances.iter().enumerate() {
        for b in &instances[..n] {
            if a.port != b.port {
                continue;
            }
            let nests = |x: &str, y: &str| {
                x == y || y.starts_with(&format!("{x}/")) || x.is_empty() || y.is_empty()
            };
            if nests(&a.base_path, &b.base_path) || nests(&b.base_path, &a.base_path) {
                err.at(
                    &a.meta.file,
                    a.address_pos,
                    "spec.address",
                    format!(
                        "port {}: base path {:?} clashes with {:?} of ApiInstance {:?} at {} (instances sharing a port need base paths that do not nest)",
                        a.port,
                        or_root(&a.base_path),
                        or_root(&b.base_path),
                        b.meta.display(),
                        here(&b.meta, b.address_pos)
                    ),
                );
            }
        }
    }
}

/// Inbound TLS is per port: every instance on a port bound to `tls` serves
/// it; an https address needs one, an http address on such a port is wrong.
fn port_tls(
    instances: &[&Instance],
    bindings: &[&Binding],
    err: &mut Errors,
) -> HashMap<u16, (crate::config::tls::ListenerTls, String)> {
    let mut port_tls: HashMap<u16, (crate::config::tls::ListenerTls, String)> = HashMap::new();
    for inst in instances {
        let bound = inst
            .policies
            .iter()
            .chain(bindings.iter().copied().filter(|b| targets(b, inst)));
        for b in bound {
            let Bound::Tls(t) = &b.policy else { continue };
            match port_tls.get(&inst.port) {
                Some((existing, first)) if existing != t.as_ref() => err.at(
                    &b.meta.file,
                    b.pos,
                    &b.path,
                    format!(
                        "port {} already has another tls policy ({first}); instances sharing a port share its TLS",
                        inst.port
                    ),
                ),
                Some(_) => {}
                None => {
                    port_tls.insert(inst.port, (t.as_ref().clone(), here(&b.meta, b.pos)));
                }
            }
        }
    }
    for inst in instances {
        match (inst.https, port_tls.contains_key(&inst.port)) {
            (true, false) => err.at(
                &inst.meta.file,
                inst.address_pos,
                "spec.address",
                format!(
                    "https address, but no `tls` policy is bound to an API instance on port {} (bind one with the certificate)",
                    inst.port
                ),
            ),
            (false, true) => err.at(
                &inst.meta.file,
                inst.address_pos,
                "spec.address",
                format!(
                    "port {} serves TLS (a `tls` policy is bound): write the address with https://",
                    inst.port
                ),
            ),
            _ => {}
        }
    }

    port_tls
}

/// The services ride on documents of their own, one per file (so a clash
/// with a kind: Gateway service names the right file); the last one also
/// carries the services route-weighted derived.
fn carriers(
    resources: &[Resource],
    services: BTreeMap<String, (ServiceConfig, Meta, Pos)>,
    derived: Vec<ServiceConfig>,
) -> Vec<GatewayDoc> {
    let first = resources[0].meta();
    let mut carriers: Vec<GatewayDoc> = Vec::new();
    for (name, (config, meta, pos)) in services {
        let i = match carriers.iter().position(|c| c.file == meta.file) {
            Some(i) => i,
            None => {
                carriers.push(GatewayDoc::empty(&meta.file, meta.pos));
                carriers.len() - 1
            }
        };
        let c = &mut carriers[i];
        c.service_names
            .push((name.clone(), pos, format!("{} {name:?}", meta.kind)));
        c.services.push(ServiceSpec {
            config,
            pos,
            path: String::new(),
        });
    }
    if carriers.is_empty() {
        carriers.push(GatewayDoc::empty(&first.file, first.pos));
    }
    if let Some(last) = carriers.last_mut() {
        for config in derived {
            last.services.push(ServiceSpec {
                config,
                pos: first.pos,
                path: String::new(),
            });
        }
    }
    carriers
}

/// The Service a route names, or an error with the closest name.
fn resolve_service(
    err: &mut Errors,
    b: &Binding,
    r: &super::resources::Ref,
    known: &[String],
) -> Option<String> {
    let ns = if r.namespace.is_empty() {
        &b.meta.namespace
    } else {
        &r.namespace
    };
    let name = qualified(ns, &r.name);
    if known.contains(&name) {
        return Some(name);
    }
    let known: Vec<&str> = known.iter().map(String::as_str).collect();
    let hint = match suggest(&name, &known) {
        Some(s) => format!(" (did you mean {s:?}?)"),
        None if known.is_empty() => " (no Service is defined)".into(),
        None => format!(" (defined: {})", known.join(", ")),
    };
    err.at(
        &b.meta.file,
        r.pos,
        &r.path,
        format!("unknown Service {name:?}{hint}"),
    );
    None
}

fn or_root(p: &str) -> &str {
    if p.is_empty() {
        "/"
    } else {
        p
    }
}
