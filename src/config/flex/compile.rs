//! Flex resources → the documents `load.rs` assembles: one document per
//! `ApiInstance` (its listener, its routes in Flex order, the policies bound
//! to it) and one carrying every service and the `Configuration` settings.
//! References (targets, destinations) are resolved here, with every
//! problem reported at its file:line:col.

use super::catalog::{Bound, CircuitPatch, RouteTo};
use super::resources::{qualified, Binding, ConfigRes, Instance, Meta, Resource, Target};
use crate::config::decode::{suggest, ConfigError};
use crate::config::model::{
    LimitSettings, Retries, RouteUpstream, ServerSettings, ServiceConfig, TimeoutSettings,
    Timeouts, WeightedService, DEFAULT_UPSTREAM_TIMEOUT,
};
use crate::config::rules::{FlexRoute, PolicyRules};
use crate::config::schema::{GatewayDoc, ListenerSpec, RouteId, RouteSpec};
use crate::config::services::{ServiceSpec, UpstreamSpec};
use crate::config::yaml::Pos;
use crate::policy::PolicySpec;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Flex's default for `timeouts.upstreamResponseSeconds`.
const UPSTREAM_RESPONSE: Duration = Duration::from_secs(15);

/// What the Flex resources compile to.
#[derive(Debug, Default)]
pub struct Compiled {
    pub docs: Vec<GatewayDoc>,
    /// Said once at start (and by `validate`): what is accepted but not applied.
    pub notices: Vec<String>,
    pub log_level: Option<log::LevelFilter>,
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
    }

    pub fn is_empty(&self) -> bool {
        self.shared_storage.is_none() && self.body_timeout.is_none() && self.admin.is_none()
    }
}

struct Errors<'e>(&'e mut Vec<ConfigError>);

impl Errors<'_> {
    fn at(&mut self, file: &str, pos: Pos, path: &str, message: impl Into<String>) {
        self.0.push(ConfigError {
            file: file.to_string(),
            pos,
            path: path.to_string(),
            message: message.into(),
        });
    }
}

fn here(m: &Meta, pos: Pos) -> String {
    format!("{}:{}:{}", m.file, pos.line, pos.col)
}

pub fn compile(resources: &[Resource], errors: &mut Vec<ConfigError>) -> Compiled {
    let mut err = Errors(errors);
    let mut out = Compiled::default();
    if resources.is_empty() {
        return out;
    }
    // one resource per kind, namespace and name
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

    // services: Service resources, and each instance's inline services
    let mut services: BTreeMap<String, (ServiceConfig, Meta, Pos)> = BTreeMap::new();
    for r in resources {
        if let Resource::Service(s) = r {
            let name = s.meta.display();
            let mut c = ServiceConfig::inline("", s.upstream.clone());
            c.name = name.clone();
            services.insert(name, (c, s.meta.clone(), s.meta.pos));
        }
    }
    for i in &instances {
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
    let service_names: Vec<String> = services.keys().cloned().collect();
    let resolve = |err: &mut Errors, b: &Binding, r: &super::resources::Ref| {
        resolve_service(err, b, r, &service_names)
    };

    // bindings to Services: circuit-breaker-flex
    let mut patches: Vec<(String, CircuitPatch)> = Vec::new();
    let mut tls_out: Vec<(String, crate::config::model::UpstreamTls, bool)> = Vec::new();
    for b in &bindings {
        match (&b.target, &b.policy) {
            (Target::Service(r), Bound::CircuitBreaker(p)) => {
                if let Some(name) = resolve(&mut err, b, r) {
                    patches.push((name, *p));
                }
            }
            (Target::Service(r), Bound::TlsOutbound(t, h2)) => {
                if let Some(name) = resolve(&mut err, b, r) {
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
                            resolve(&mut err, b, &t.service);
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

    // Configuration resources
    let configs: Vec<&ConfigRes> = resources
        .iter()
        .filter_map(|r| match r {
            Resource::Configuration(c) => Some(c),
            _ => None,
        })
        .collect();
    let mut response_timeout = UPSTREAM_RESPONSE;
    let mut set_by: HashMap<&str, String> = HashMap::new();
    for c in &configs {
        let s = &mut out.server;
        let mut once = |err: &mut Errors, key: &'static str| {
            if let Some(first) = set_by.get(key) {
                err.at(
                    &c.meta.file,
                    c.meta.pos,
                    &format!("spec.{key}"),
                    format!("{key} is already configured at {first}"),
                );
            } else {
                set_by.insert(key, here(&c.meta, c.meta.pos));
            }
        };
        if let Some(r) = &c.shared_storage {
            once(&mut err, "sharedStorage");
            s.shared_storage = Some(r.clone());
        }
        if let Some(t) = c.timeouts {
            once(&mut err, "timeouts");
            if let Some(secs) = t.upstream_response {
                response_timeout = Duration::from_secs(secs);
            }
            if let Some(secs) = t.stream_idle {
                s.body_timeout = Some(Duration::from_secs(secs));
            }
            if t.upstream_connection_idle.is_some() {
                out.notices.push(format!(
                    "{}: timeouts.upstreamConnectionIdleSeconds is not applied (idle upstream connections are kept by the pool's own rules)",
                    c.meta.file
                ));
            }
        }
        if let Some(level) = c.log_level {
            once(&mut err, "logging");
            out.log_level = Some(level);
        }
        if let Some(probe) = c.probe {
            once(&mut err, "probe");
            match probe {
                Some(port) => {
                    s.admin = Some(std::net::SocketAddr::new(
                        crate::config::model::DEFAULT_ADMIN.ip(),
                        port,
                    ))
                }
                None => out.notices.push(format!(
                    "{}: probe.enabled false: the admin listener (probes, metrics) stays on",
                    c.meta.file
                )),
            }
        }
        for key in &c.not_applied {
            out.notices.push(format!(
                "{}: Configuration {:?}: {key} is accepted but not applied",
                c.meta.file,
                c.meta.display()
            ));
        }
    }

    // port sharing: base paths of one port must not nest
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

    // inbound TLS is per port: every instance on a port bound to `tls`
    // serves it
    let mut port_tls: HashMap<u16, (crate::config::tls::ListenerTls, String)> = HashMap::new();
    for inst in &instances {
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
    for inst in &instances {
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

    let timeouts = TimeoutSettings {
        request: Some(response_timeout),
        ..TimeoutSettings::default()
    };
    let mut derived: Vec<ServiceConfig> = Vec::new();
    for inst in &instances {
        let tls = port_tls.get(&inst.port).map(|(t, _)| t.clone());
        if let Some(doc) = compile_instance(
            inst,
            &bindings,
            &services,
            &mut derived,
            Listening { timeouts, tls },
            &mut err,
            &resolve,
        ) {
            out.docs.push(doc);
        }
    }

    // the services ride on documents of their own, one per file (so a
    // clash with a kind: Gateway service names the right file); the last
    // one carries the settings
    let first = resources[0].meta();
    let carrier = |file: &str, pos: Pos| GatewayDoc {
        file: file.to_string(),
        pos,
        name: String::new(),
        labels: BTreeMap::new(),
        listeners: Vec::new(),
        routes: Vec::new(),
        route_ids: Vec::new(),
        server: None,
        policies: Vec::new(),
        services: Vec::new(),
        service_names: Vec::new(),
    };
    let mut carriers: Vec<GatewayDoc> = Vec::new();
    for (name, (config, meta, pos)) in services {
        let i = match carriers.iter().position(|c| c.file == meta.file) {
            Some(i) => i,
            None => {
                carriers.push(carrier(&meta.file, meta.pos));
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
        carriers.push(carrier(&first.file, first.pos));
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
    out.docs.extend(carriers);
    out
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

/// Does `binding` apply to `inst`?
fn targets(b: &Binding, inst: &Instance) -> bool {
    match &b.target {
        Target::Instance(r) => qualified(&r.namespace, &r.name) == inst.meta.display(),
        Target::Selector(labels) => labels
            .iter()
            .all(|(k, v)| inst.meta.labels.get(k) == Some(v)),
        Target::Service(_) | Target::Inline => false,
    }
}

/// What an instance's routes and listener get from the whole config: the
/// upstream timeouts (`Configuration.timeouts`) and its port's TLS.
struct Listening {
    timeouts: TimeoutSettings,
    tls: Option<crate::config::tls::ListenerTls>,
}

type Resolve<'a> = dyn Fn(&mut Errors, &Binding, &super::resources::Ref) -> Option<String> + 'a;

fn compile_instance(
    inst: &Instance,
    bindings: &[&Binding],
    services: &BTreeMap<String, (ServiceConfig, Meta, Pos)>,
    derived: &mut Vec<ServiceConfig>,
    Listening { timeouts, tls }: Listening,
    err: &mut Errors,
    resolve: &Resolve,
) -> Option<GatewayDoc> {
    let display = inst.meta.display();
    let mine: Vec<&Binding> = inst
        .policies
        .iter()
        .chain(bindings.iter().copied().filter(|b| targets(b, inst)))
        .collect();
    // routes, in Flex order: inline services (order 50, as written), then
    // route bindings by their order; stable
    struct Draft {
        order: i32,
        rules: crate::config::rules::Rules,
        destination: String,
        services: Vec<WeightedService>,
        pos: Pos,
        path: String,
    }
    let mut drafts: Vec<Draft> = Vec::new();
    for s in &inst.services {
        let name = qualified(
            &inst.meta.namespace,
            &format!("{}-{}", inst.meta.name, s.name),
        );
        let one = vec![WeightedService { name, weight: 1 }];
        let path = format!("spec.services.{}", s.name);
        if s.routes.is_empty() {
            drafts.push(Draft {
                order: crate::policy::DEFAULT_ORDER,
                rules: Default::default(),
                destination: String::new(),
                services: one,
                pos: s.pos,
                path,
            });
            continue;
        }
        for (k, r) in s.routes.iter().enumerate() {
            drafts.push(Draft {
                order: crate::policy::DEFAULT_ORDER,
                rules: r.rules.clone(),
                destination: r.destination_path.clone(),
                services: one.clone(),
                pos: s.pos,
                path: format!("{path}.routes[{k}]"),
            });
        }
    }
    let mut policies: Vec<PolicySpec> = Vec::new();
    for b in &mine {
        match &b.policy {
            Bound::Route(targets) => {
                let resolved: Vec<(String, &RouteTo)> = targets
                    .iter()
                    .filter_map(|t| resolve(err, b, &t.service).map(|n| (n, t)))
                    .collect();
                if resolved.len() != targets.len() {
                    continue;
                }
                let same = resolved
                    .iter()
                    .all(|(_, t)| t.destination_path == resolved[0].1.destination_path);
                let destination = if same {
                    resolved[0].1.destination_path.clone()
                } else {
                    String::new()
                };
                let weighted = resolved
                    .iter()
                    .map(|(name, t)| {
                        if same || t.destination_path.is_empty() {
                            return WeightedService {
                                name: name.clone(),
                                weight: t.weight,
                            };
                        }
                        // per-target destination paths: a service of its own
                        // whose base path carries it
                        let dname = format!("{name}{}", t.destination_path);
                        if !derived.iter().any(|c| c.name == dname) {
                            if let Some((c, _, _)) = services.get(name) {
                                let mut c = c.clone();
                                c.name = dname.clone();
                                for target in &mut c.targets {
                                    target.upstream.base_path.push_str(&t.destination_path);
                                }
                                derived.push(c);
                            }
                        }
                        WeightedService {
                            name: dname,
                            weight: t.weight,
                        }
                    })
                    .collect();
                drafts.push(Draft {
                    order: b.order,
                    rules: b.rules.clone(),
                    destination,
                    services: weighted,
                    pos: b.pos,
                    path: b.path.clone(),
                });
            }
            Bound::Policy(config) => {
                let binding = match b.target {
                    Target::Inline => format!("{}#{}", display, b.path),
                    _ => format!("{}#{}", display, b.meta.display()),
                };
                policies.push(PolicySpec {
                    config: config.as_ref().clone(),
                    order: b.order,
                    document: Some(binding),
                    when: (!b.rules.0.is_empty()).then(|| {
                        Arc::new(PolicyRules {
                            base_path: inst.base_path.clone(),
                            rules: b.rules.clone(),
                        })
                    }),
                    tier: u8::from(!matches!(b.target, Target::Selector(_))),
                });
            }
            // applied to the port / the Service before the instances
            Bound::CircuitBreaker(_) | Bound::Tls(_) | Bound::TlsOutbound(..) => {}
        }
    }
    if drafts.is_empty() {
        err.at(
            &inst.meta.file,
            inst.meta.pos,
            "spec",
            format!(
                "ApiInstance {display:?} has no route: give `spec.services`, or bind a `route` policy to it"
            ),
        );
        return None;
    }
    drafts.sort_by_key(|d| d.order);
    let mut routes = Vec::new();
    let mut route_ids = Vec::new();
    for (k, d) in drafts.into_iter().enumerate() {
        let id = format!("{display}/route-{}", k + 1);
        route_ids.push(RouteId {
            id: id.clone(),
            pos: d.pos,
            path: d.path.clone(),
        });
        routes.push(RouteSpec {
            id,
            pos: d.pos,
            path: d.path,
            paths: Vec::new(),
            methods: None,
            host: None,
            upstream: UpstreamSpec {
                upstream: RouteUpstream {
                    services: d.services,
                    timeouts: Timeouts::all(DEFAULT_UPSTREAM_TIMEOUT),
                    retries: Retries::default(),
                },
                inline: None,
                references: Vec::new(),
                timeouts,
            },
            max_body_size: None,
            allow_encoded_slashes: false,
            policies: Vec::new(),
            flex: Some(Arc::new(FlexRoute {
                base_path: inst.base_path.clone(),
                rules: d.rules,
                destination_path: d.destination,
            })),
        });
    }
    Some(GatewayDoc {
        file: inst.meta.file.clone(),
        pos: inst.meta.pos,
        name: display.clone(),
        labels: inst.meta.labels.clone(),
        listeners: vec![ListenerSpec {
            name: display,
            host: inst.host,
            port: inst.port,
            limits: LimitSettings::default(),
            tls,
            pos: inst.address_pos,
            path: "spec.address".into(),
        }],
        routes,
        route_ids,
        server: None,
        policies,
        services: Vec::new(),
        service_names: Vec::new(),
    })
}
