//! The ordered chain of a route's policies and how a request passes it.
//!
//! Request hooks run in chain order and stop at the first policy that
//! answers; the chain remembers how many ran, so response hooks run in
//! reverse for exactly those (a request rejected by the second policy gets
//! the response headers of the first two, e.g. rate-limit headers on a 401).

use super::{Decision, LocalResponse, Policy};
use crate::config::rules::PolicyRules;
use crate::exchange::Exchange;
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::Arc;

/// One policy in a chain, with its name (for metrics and logs).
#[derive(Clone)]
pub struct Link {
    pub name: &'static str,
    pub policy: Arc<dyn Policy>,
    /// Flex binding `rules`: the policy applies only to requests matching
    /// them; `None`: to every request of the route.
    pub when: Option<Arc<PolicyRules>>,
}

/// Which policies of a chain saw the request: the first `count` links,
/// less those whose `rules` did not match (bit per link; a chain has at
/// most [`MAX_LINKS`]). Their response and logging hooks run; the others'
/// do not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ran {
    pub count: usize,
    skipped: u64,
    /// The response cache deferred the policies from this index on (0:
    /// none did): they run on a miss ([`Chain::resume`]), and their
    /// response hooks before the response is stored ([`Side::Inner`]).
    split: usize,
    /// Deferred and not resumed yet.
    waiting: bool,
}

/// Which response hooks: all, those of the policies up to the response
/// cache (run on every response, hits too), or those after it (run on the
/// upstream's response, before it is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    All,
    Outer,
    Inner,
}

/// The most policies one route's chain may hold.
pub const MAX_LINKS: usize = 64;

impl Ran {
    fn saw(&self, i: usize) -> bool {
        i < self.count && (i >= 64 || self.skipped & (1 << i) == 0)
    }

    fn on(&self, i: usize, side: Side) -> bool {
        self.saw(i)
            && match side {
                Side::All => true,
                Side::Outer => self.split == 0 || i < self.split,
                Side::Inner => self.split > 0 && i >= self.split,
            }
    }

    /// The response cache deferred the rest of the chain.
    pub fn deferred(&self) -> bool {
        self.split > 0
    }
}

/// A policy answered the request itself.
/// A policy's run on the request, for its span (`policySpans`).
#[derive(Debug, Clone, Copy)]
pub struct PolicyTiming {
    pub name: &'static str,
    pub start_ns: u64,
    pub end_ns: u64,
    /// It answered the request itself.
    pub answered: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub policy: &'static str,
    pub response: LocalResponse,
}

#[derive(Clone, Default)]
pub struct Chain {
    links: Vec<Link>,
    /// Some policy has a request (response) body hook.
    bodies: (bool, bool),
    /// Headers the policies assert upstream, in both spellings: removed
    /// from the client's request before the chain runs.
    asserted: Vec<http::HeaderName>,
    /// Headers credentials are read from: one copy at most.
    credentials: Vec<http::HeaderName>,
}

impl Chain {
    /// Links already in their final order.
    pub fn new(links: Vec<Link>) -> Chain {
        let bodies = links.iter().fold((false, false), |(rq, rs), l| {
            let (a, b) = l.policy.body_hooks();
            (rq || a, rs || b)
        });
        let mut asserted = Vec::new();
        let mut credentials = Vec::new();
        for l in &links {
            for h in l.policy.asserted_headers() {
                for name in super::common::spellings(&h) {
                    if !asserted.contains(&name) {
                        asserted.push(name);
                    }
                }
            }
            for h in l.policy.credential_headers() {
                if !credentials.contains(&h) {
                    credentials.push(h);
                }
            }
        }
        Chain {
            links,
            bodies,
            asserted,
            credentials,
        }
    }

    /// Whether a policy wants the request (response) body.
    pub fn body_hooks(&self) -> (bool, bool) {
        self.bodies
    }

    /// Request body hooks of the policies that saw the request, in order,
    /// until one refuses the request.
    pub fn on_request_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
        ran: Ran,
    ) -> pingora::Result<Option<Rejection>> {
        for (i, link) in self.links.iter().enumerate() {
            if ran.saw(i) && link.policy.body_hooks().0 {
                if let Decision::Respond(response) =
                    link.policy.on_request_body(body, end_of_stream, x)?
                {
                    return Ok(Some(Rejection {
                        policy: link.name,
                        response,
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Response body hooks of the policies that saw the request, last first.
    pub fn on_response_body(
        &self,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        x: &mut Exchange,
        ran: Ran,
        side: Side,
    ) -> pingora::Result<()> {
        for (i, link) in self.links.iter().enumerate().rev() {
            if ran.on(i, side) && link.policy.body_hooks().1 {
                link.policy.on_response_body(body, end_of_stream, x)?;
            }
        }
        Ok(())
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.links.iter().map(|l| l.name)
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<dyn Policy>> + '_ {
        self.links.iter().map(|l| &l.policy)
    }

    /// Run the request hooks; `ran` counts the policies that saw the request.
    pub async fn on_request(
        &self,
        req: &mut RequestHeader,
        x: &mut Exchange,
        ran: &mut Ran,
        timings: Option<&mut Vec<PolicyTiming>>,
    ) -> Option<Rejection> {
        for h in &self.credentials {
            let mut copies = req.headers.get_all(h).iter();
            if copies.next().is_some() && copies.next().is_some() {
                // which copy would a policy verify, which would the upstream read?
                return Some(Rejection {
                    policy: "",
                    response: LocalResponse::new(400, format!("more than one {h} header")),
                });
            }
        }
        for h in &self.asserted {
            req.remove_header(h);
        }
        self.run(0, req, x, ran, timings).await
    }

    /// The policies the response cache deferred, on a miss (nothing when
    /// none were).
    pub async fn resume(
        &self,
        req: &mut RequestHeader,
        x: &mut Exchange,
        ran: &mut Ran,
    ) -> Option<Rejection> {
        if !ran.waiting {
            return None;
        }
        ran.waiting = false;
        self.run(ran.split, req, x, ran, None).await
    }

    async fn run(
        &self,
        from: usize,
        req: &mut RequestHeader,
        x: &mut Exchange,
        ran: &mut Ran,
        mut timings: Option<&mut Vec<PolicyTiming>>,
    ) -> Option<Rejection> {
        for (i, link) in self.links.iter().enumerate().skip(from) {
            ran.count += 1;
            if !applies(link, req, x) {
                ran.skipped |= 1u64.checked_shl(i as u32).unwrap_or(0);
                continue;
            }
            let start_ns = timings.as_ref().map_or(0, |_| crate::trace::now_ns());
            let decision = link.policy.on_request(req, x).await;
            if let Some(t) = timings.as_deref_mut() {
                t.push(PolicyTiming {
                    name: link.name,
                    start_ns,
                    end_ns: crate::trace::now_ns(),
                    answered: matches!(decision, Decision::Respond(_)),
                });
            }
            match decision {
                Decision::Continue => {}
                Decision::Respond(response) => {
                    return Some(Rejection {
                        policy: link.name,
                        response,
                    })
                }
                Decision::Defer => {
                    ran.split = i + 1;
                    ran.waiting = true;
                    return None;
                }
            }
        }
        None
    }

    /// The method is not allowed on the route: a policy may still answer.
    pub fn on_method_not_allowed(
        &self,
        req: &RequestHeader,
        x: &mut Exchange,
        ran: &mut Ran,
    ) -> Option<Rejection> {
        for (i, link) in self.links.iter().enumerate() {
            ran.count += 1;
            if !applies(link, req, x) {
                ran.skipped |= 1u64.checked_shl(i as u32).unwrap_or(0);
                continue;
            }
            if let Decision::Respond(response) = link.policy.on_method_not_allowed(req, x) {
                return Some(Rejection {
                    policy: link.name,
                    response,
                });
            }
        }
        None
    }

    /// The upstream-request hooks of the policies that saw the request.
    pub fn on_upstream_request(
        &self,
        up: &mut RequestHeader,
        x: &mut Exchange,
        ran: Ran,
    ) -> pingora::Result<()> {
        for (i, link) in self.links.iter().enumerate() {
            if ran.saw(i) {
                link.policy.on_upstream_request(up, x)?;
            }
        }
        Ok(())
    }

    /// Response hooks of the policies that saw the request, last first.
    pub fn on_response(
        &self,
        resp: &mut ResponseHeader,
        x: &mut Exchange,
        ran: Ran,
        side: Side,
    ) -> pingora::Result<()> {
        for (i, link) in self.links.iter().enumerate().rev() {
            if ran.on(i, side) {
                link.policy.on_response(resp, x)?;
            }
        }
        Ok(())
    }

    pub fn on_logging(&self, x: &Exchange, status: u16, ran: Ran) {
        for (i, link) in self.links.iter().enumerate() {
            if ran.saw(i) {
                link.policy.on_logging(x, status);
            }
        }
    }
}

/// Whether a link's `rules` (if any) match the request.
fn applies(link: &Link, req: &RequestHeader, x: &Exchange) -> bool {
    match &link.when {
        None => true,
        Some(rules) => rules.applies(
            req.method.as_str(),
            super::common::request_host(req),
            &x.path,
            &req.headers,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// Records the hooks it sees; answers 401 when `reject`; defers the
    /// rest of the chain when tagged `cache`.
    struct Probe {
        tag: &'static str,
        reject: bool,
        log: Arc<Mutex<Vec<String>>>,
    }

    #[async_trait]
    impl Policy for Probe {
        async fn on_request(&self, _req: &mut RequestHeader, _x: &mut Exchange) -> Decision {
            self.log.lock().unwrap().push(format!("req {}", self.tag));
            if self.tag == "cache" {
                Decision::Defer
            } else if self.reject {
                Decision::Respond(LocalResponse::new(401, "no"))
            } else {
                Decision::Continue
            }
        }

        fn on_method_not_allowed(&self, req: &RequestHeader, _x: &mut Exchange) -> Decision {
            // answers preflight-like requests, as CORS will
            if req.method == http::Method::OPTIONS && self.tag == "cors" {
                Decision::Respond(LocalResponse::new(204, ""))
            } else {
                Decision::Continue
            }
        }

        fn on_response(&self, resp: &mut ResponseHeader, _x: &mut Exchange) -> pingora::Result<()> {
            self.log.lock().unwrap().push(format!("resp {}", self.tag));
            resp.append_header("x-seen", self.tag)?;
            Ok(())
        }
    }

    fn chain(spec: &[(&'static str, bool)], log: &Arc<Mutex<Vec<String>>>) -> Chain {
        Chain::new(
            spec.iter()
                .map(|(tag, reject)| Link {
                    when: None,
                    name: tag,
                    policy: Arc::new(Probe {
                        tag,
                        reject: *reject,
                        log: log.clone(),
                    }),
                })
                .collect(),
        )
    }

    fn run(spec: &[(&'static str, bool)]) -> (Option<Rejection>, Vec<String>, Vec<String>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let c = chain(spec, &log);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut x = Exchange::new();
        let mut ran = Ran::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let rejected = rt.block_on(c.on_request(&mut req, &mut x, &mut ran, None));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        c.on_response(&mut resp, &mut x, ran, Side::All).unwrap();
        let seen = resp
            .headers
            .get_all("x-seen")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let log = log.lock().unwrap().clone();
        (rejected, log, seen)
    }

    #[test]
    fn request_in_order_response_in_reverse() {
        let (rejected, log, seen) = run(&[("a", false), ("b", false), ("c", false)]);
        assert_eq!(rejected, None);
        assert_eq!(
            log,
            ["req a", "req b", "req c", "resp c", "resp b", "resp a"]
        );
        assert_eq!(seen, ["c", "b", "a"]);
    }

    #[test]
    fn a_disallowed_method_reaches_the_policies_that_answer_it() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let c = chain(&[("auth", true), ("cors", false)], &log);
        let mut x = Exchange::new();
        let mut ran = Ran::default();
        let options = RequestHeader::build("OPTIONS", b"/", None).unwrap();
        let answered = c.on_method_not_allowed(&options, &mut x, &mut ran).unwrap();
        assert_eq!((answered.policy, answered.response.status), ("cors", 204));
        assert_eq!(ran.count, 2);
        assert!(log.lock().unwrap().is_empty(), "no request hook ran");
        let delete = RequestHeader::build("DELETE", b"/", None).unwrap();
        let mut ran = Ran::default();
        assert_eq!(c.on_method_not_allowed(&delete, &mut x, &mut ran), None);
    }

    #[test]
    fn a_deferring_policy_splits_the_chain_into_hits_and_misses() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let c = chain(&[("auth", false), ("cache", false), ("limit", false)], &log);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        let mut x = Exchange::new();
        let seen = |ran: Ran, side: Side| {
            let mut x = Exchange::new();
            let mut resp = ResponseHeader::build(200, None).unwrap();
            c.on_response(&mut resp, &mut x, ran, side).unwrap();
            let v: Vec<String> = resp
                .headers
                .get_all("x-seen")
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect();
            v
        };
        // a hit: the chain stopped at the cache; nothing more runs
        let mut hit = Ran::default();
        assert_eq!(
            rt.block_on(c.on_request(&mut req, &mut x, &mut hit, None)),
            None
        );
        assert!(hit.deferred());
        assert_eq!(seen(hit, Side::Outer), ["cache", "auth"]);
        assert!(seen(hit, Side::Inner).is_empty());
        // a miss: the rest runs once, its response hooks on the inner side
        let mut miss = hit;
        assert_eq!(rt.block_on(c.resume(&mut req, &mut x, &mut miss)), None);
        assert_eq!(rt.block_on(c.resume(&mut req, &mut x, &mut miss)), None);
        assert_eq!(seen(miss, Side::Inner), ["limit"]);
        assert_eq!(seen(miss, Side::Outer), ["cache", "auth"]);
        assert_eq!(seen(miss, Side::All), ["limit", "cache", "auth"]);
        let requests: Vec<String> = log.lock().unwrap().clone();
        assert_eq!(
            requests
                .iter()
                .filter(|l| l.starts_with("req"))
                .collect::<Vec<_>>(),
            ["req auth", "req cache", "req limit"]
        );
        // without a deferring policy, the outer side is all of them
        let plain = chain(&[("a", false), ("b", false)], &log);
        let mut ran = Ran::default();
        assert_eq!(
            rt.block_on(plain.on_request(&mut req, &mut x, &mut ran, None)),
            None
        );
        let mut resp = ResponseHeader::build(200, None).unwrap();
        plain
            .on_response(&mut resp, &mut x, ran, Side::Outer)
            .unwrap();
        assert_eq!(resp.headers.get_all("x-seen").iter().count(), 2);
    }

    #[test]
    fn a_rejection_stops_the_chain_and_only_the_policies_that_ran_see_the_response() {
        let (rejected, log, seen) = run(&[("a", false), ("b", true), ("c", false)]);
        let rejected = rejected.expect("rejected");
        assert_eq!(rejected.policy, "b");
        assert_eq!(rejected.response.status, 401);
        assert_eq!(log, ["req a", "req b", "resp b", "resp a"]);
        assert_eq!(seen, ["b", "a"]);
    }
}
