//! `route` and `route-weighted`: where an instance's requests go.

use super::RouteTo;
use crate::config::decode::{join, Decoder};
use crate::config::fields::{f, Field, Ty, STR};
use crate::config::flex::resources::Ref;
use crate::config::yaml::Node;

pub const ROUTE_FIELDS: &[Field] = &[
    f("destinationRef", Ty::Obj(REF_FIELDS))
        .req()
        .doc("The Service requests go to."),
    f("destinationPath", Ty::Text("a path starting with /")),
];
pub const WEIGHTED_FIELDS: &[Field] =
    &[f("routes", Ty::List(&Ty::Obj(WEIGHTED_ITEM_FIELDS), false)).req()];
const WEIGHTED_ITEM_FIELDS: &[Field] = &[
    f("weight", Ty::Int(1, 100)).req(),
    f("destinationRef", Ty::Obj(REF_FIELDS)).req(),
    f("destinationPath", Ty::Text("a path starting with /")),
];
const REF_FIELDS: &[Field] = &[
    f("name", STR).req(),
    f("namespace", STR),
    f("kind", Ty::Enum(&["Service"])),
];

fn destination_ref(d: &mut Decoder, n: &Node, path: &str) -> Option<Ref> {
    let f = d.map(n, path, REF_FIELDS)?;
    if let Some(k) = f.get("kind") {
        let kp = join(path, "kind");
        if d.scalar(k, &kp, "a kind")? != "Service" {
            d.error(k.pos, &kp, "a destination is a Service");
            return None;
        }
    }
    let name = d.required(&f, "name", path)?;
    let np = join(path, "name");
    let text = d.string(name, &np)?;
    let namespace = match f.get("namespace") {
        Some(ns) => d.string(ns, &join(path, "namespace"))?,
        None => String::new(), // the binding's namespace, filled in later
    };
    Some(Ref {
        name: text,
        namespace,
        pos: name.pos,
        path: np,
    })
}

fn route_target(
    d: &mut Decoder,
    f: &crate::config::decode::Fields,
    path: &str,
    weight: u32,
) -> Option<RouteTo> {
    let service = d
        .required(f, "destinationRef", path)
        .and_then(|n| destination_ref(d, n, &join(path, "destinationRef")));
    let destination_path = match f.get("destinationPath") {
        Some(n) => {
            crate::config::flex::resources::destination(d, n, &join(path, "destinationPath"))
        }
        None => Some(String::new()),
    };
    Some(RouteTo {
        service: service?,
        destination_path: destination_path?,
        weight,
    })
}

pub(super) fn route(d: &mut Decoder, c: &Node, path: &str) -> Option<RouteTo> {
    let f = d.map(c, path, ROUTE_FIELDS)?;
    route_target(d, &f, path, 1)
}

pub(super) fn route_weighted(d: &mut Decoder, c: &Node, path: &str) -> Option<Vec<RouteTo>> {
    let f = d.map(c, path, WEIGHTED_FIELDS)?;
    let list = d.required(&f, "routes", path)?;
    let before = d.errors.len();
    let mut out = Vec::new();
    for (item, at) in d.items(list, &join(path, "routes"), false) {
        let Some(g) = d.map(item, &at, WEIGHTED_ITEM_FIELDS) else {
            continue;
        };
        let weight = d
            .required(&g, "weight", &at)
            .and_then(|w| d.int(w, &join(&at, "weight"), 1, 100));
        if let (Some(w), Some(r)) = (weight, route_target(d, &g, &at, 1)) {
            out.push(RouteTo {
                weight: w as u32,
                ..r
            });
        }
    }
    if out.is_empty() && d.errors.len() == before {
        d.error(
            list.pos,
            &join(path, "routes"),
            "at least one route is required",
        );
    }
    (d.errors.len() == before).then_some(out)
}
