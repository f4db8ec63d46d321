//! A route's `upstream` (an inline `url`, one `service`, or weighted
//! `services`), its timeouts and retries, decoded with every problem
//! reported. The services it names are checked in `load.rs`.

use super::decode::{join, Decoder, Fields};
use super::fields::{f, Field, Ty, DURATION, STR};
use super::model::{Retries, RouteUpstream, ServiceConfig, TimeoutSettings, WeightedService};
use super::services::{decode_upstream_tls, duration, optional};
use super::values::parse_upstream_url;
use super::yaml::{Node, Pos};

/// A route's `upstream`, decoded: the model value, the inline service of
/// a `url`, and the names it refers to (checked across documents).
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub upstream: RouteUpstream,
    pub inline: Option<ServiceConfig>,
    /// (service name, position, field path) of each `service`/`services` name.
    pub references: Vec<(String, Pos, String)>,
    /// The timeouts as written; `upstream.timeouts` is filled with the
    /// server's defaults under them when the documents are assembled.
    pub timeouts: TimeoutSettings,
}

pub const TIMEOUT_FIELDS: &[Field] = &[
    f("timeout", DURATION).doc("Connect and read timeout, unless set apart."),
    f("connectTimeout", DURATION),
    f("readTimeout", DURATION),
    f("requestTimeout", DURATION).doc("The whole exchange, retries included."),
];

/// The timeout fields of a mapping (a route's `upstream`, or the server's
/// `upstreamTimeouts`).
pub fn decode_timeouts(d: &mut Decoder, f: &Fields, path: &str) -> Option<TimeoutSettings> {
    let before = d.errors.len();
    let mut get = |key: &str| f.get(key).and_then(|n| duration(d, n, &join(path, key)));
    let t = TimeoutSettings {
        timeout: get("timeout"),
        connect: get("connectTimeout"),
        read: get("readTimeout"),
        request: get("requestTimeout"),
    };
    (d.errors.len() == before).then_some(t)
}

pub const UPSTREAM_FIELDS: &[Field] = &[
    f("url", Ty::Url("an upstream URL")).doc("Where requests go (or `service`, or `services`)."),
    f("service", STR).doc("A service of `spec.services`."),
    f(
        "services",
        Ty::List(&Ty::Obj(TARGET_FIELDS_SERVICES), false),
    )
    .doc("Services by weight."),
    f("timeout", DURATION),
    f("connectTimeout", DURATION),
    f("readTimeout", DURATION),
    f("requestTimeout", DURATION),
    f("retries", Ty::Obj(RETRY_FIELDS)),
    f("tls", Ty::Obj(super::services::UPSTREAM_TLS_FIELDS)).doc("TLS to the `url`."),
];
const RETRY_FIELDS: &[Field] = &[
    f("maxRetries", Ty::Int(0, 10)),
    f(
        "retryOn",
        Ty::List(
            &Ty::Either(&[Ty::Enum(&["connect-failure", "timeout"]), Ty::Int(500, 599)]),
            true,
        ),
    ),
];

const RETRY_ON: &str = "connect-failure, timeout or a 5xx status such as 503";

/// A route's `upstream`.
pub fn decode_route_upstream(
    d: &mut Decoder,
    node: &Node,
    path: &str,
    route_id: Option<&str>,
) -> Option<UpstreamSpec> {
    let f = d.map(node, path, UPSTREAM_FIELDS)?;
    let before = d.errors.len();
    let given: Vec<&str> = ["url", "service", "services"]
        .into_iter()
        .filter(|k| f.get(k).is_some())
        .collect();
    if given.len() != 1 {
        let why = if given.is_empty() {
            "missing `url`, `service` or `services` (where requests go)".to_string()
        } else {
            format!(
                "give one of `url`, `service` or `services`, not {}",
                given.join(" and ")
            )
        };
        d.error(f.pos, path, why);
    }
    let mut inline = None;
    let mut services = Vec::new();
    let mut references = Vec::new();
    if let Some(n) = f.get("url") {
        let at = join(path, "url");
        if let Some(text) = d.scalar(n, &at, "a URL") {
            match parse_upstream_url(text) {
                Ok(up) => {
                    let mut config = ServiceConfig::inline(route_id.unwrap_or(""), up);
                    if let Some(t) = f.get("tls") {
                        if let Some(tls) = decode_upstream_tls(d, t, &join(path, "tls")) {
                            config.tls = tls;
                        }
                    }
                    services.push(WeightedService {
                        name: config.name.clone(),
                        weight: 1,
                    });
                    inline = Some(config);
                }
                Err(why) => d.error(n.pos, &at, why),
            }
        }
    }
    if let Some(n) = f.get("service") {
        let at = join(path, "service");
        if let Some(name) = d.string(n, &at) {
            references.push((name.clone(), n.pos, at));
            services.push(WeightedService { name, weight: 1 });
        }
    }
    if let Some(list) = f.get("services") {
        let at = join(path, "services");
        for (item, item_path) in d.items(list, &at, false) {
            let Some(g) = d.map(item, &item_path, TARGET_FIELDS_SERVICES) else {
                continue;
            };
            let name = d.required(&g, "name", &item_path).and_then(|n| {
                let p = join(&item_path, "name");
                let name = d.string(n, &p)?;
                references.push((name.clone(), n.pos, p));
                Some(name)
            });
            let weight = match g.get("weight") {
                Some(n) => d
                    .int(n, &join(&item_path, "weight"), 0, 1000)
                    .map(|w| w as u32),
                None => Some(1),
            };
            if let (Some(name), Some(weight)) = (name, weight) {
                if services.iter().any(|s: &WeightedService| s.name == name) {
                    d.error(
                        item.pos,
                        &item_path,
                        format!("service {name:?} is listed twice"),
                    );
                }
                services.push(WeightedService { name, weight });
            }
        }
        if services.iter().all(|s| s.weight == 0) && d.errors.len() == before {
            d.error(list.pos, &at, "at least one service needs a weight above 0");
        }
    }
    if let (Some(t), None) = (f.get("tls"), f.get("url")) {
        d.error(
            t.pos,
            &join(path, "tls"),
            "`tls` here applies to a `url`; set it on the service instead",
        );
    }
    let timeouts = decode_timeouts(d, &f, path);
    let retries = optional(d, &f, "retries", path, Retries::default(), decode_retries);
    if d.errors.len() > before {
        return None;
    }
    let timeouts = timeouts?;
    Some(UpstreamSpec {
        upstream: RouteUpstream {
            services,
            timeouts: timeouts.resolve(TimeoutSettings::default()),
            retries: retries?,
        },
        inline,
        references,
        timeouts,
    })
}

const TARGET_FIELDS_SERVICES: &[Field] = &[
    f("name", STR).req(),
    f("weight", Ty::Int(0, 1000)).default("1"),
];

fn decode_retries(d: &mut Decoder, node: &Node, path: &str) -> Option<Retries> {
    let f = d.map(node, path, RETRY_FIELDS)?;
    let max = optional(
        d,
        &f,
        "maxRetries",
        path,
        Retries::default().max,
        |d, n, p| d.int(n, p, 0, 10).map(|v| v as u32),
    );
    let on = match f.get("retryOn") {
        None => Some(Retries::default()),
        Some(list) => {
            let mut r = Retries {
                max: 0,
                connect_failure: false,
                statuses: Vec::new(),
                timeout: false,
            };
            let before = d.errors.len();
            for (item, at) in d.items(list, &join(path, "retryOn"), true) {
                let Some(text) = d.scalar(item, &at, RETRY_ON) else {
                    continue;
                };
                match text {
                    "connect-failure" => r.connect_failure = true,
                    "timeout" => r.timeout = true,
                    code => match code.parse::<u16>() {
                        Ok(s) if (500..=599).contains(&s) => r.statuses.push(s),
                        _ => d.error(
                            item.pos,
                            &at,
                            format!("{text:?} is not a retry condition (expected {RETRY_ON})"),
                        ),
                    },
                }
            }
            (d.errors.len() == before).then_some(r)
        }
    };
    let mut on = on?;
    on.max = max?;
    Some(on)
}
