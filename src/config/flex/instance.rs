//! One `ApiInstance` compiled into a document: its listener, its routes
//! in Flex order (inline services, then `route` / `route-weighted`
//! bindings), and the policies bound to it (inline, by name, by Selector).

use super::catalog::{Bound, RouteTo};
use super::compile::Errors;
use super::resources::{qualified, Binding, Instance, Meta, Target};
use crate::config::model::{
    LimitSettings, Retries, RouteUpstream, ServiceConfig, TimeoutSettings, Timeouts,
    WeightedService, DEFAULT_UPSTREAM_TIMEOUT,
};
use crate::config::rules::{FlexRoute, PolicyRules};
use crate::config::schema::{GatewayDoc, ListenerSpec, RouteId, RouteSpec};
use crate::config::services::UpstreamSpec;
use crate::config::yaml::Pos;
use crate::policy::PolicySpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Does `binding` apply to `inst`?
pub(super) fn targets(b: &Binding, inst: &Instance) -> bool {
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
pub(super) struct Listening {
    pub(super) timeouts: TimeoutSettings,
    pub(super) tls: Option<crate::config::tls::ListenerTls>,
}

pub(super) type Resolve<'a> =
    dyn Fn(&mut Errors, &Binding, &super::resources::Ref) -> Option<String> + 'a;

pub(super) fn compile_instance(
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
                let mut config = config.as_ref().clone();
                config.for_api(&inst.meta.name);
                policies.push(PolicySpec {
                    config,
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
            Bound::CircuitBreaker(_)
            | Bound::Tls(_)
            | Bound::TlsOutbound(..)
            | Bound::Extension(_) => {}
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
            allow_path_parameters: false,
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
            h2c: false,
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
