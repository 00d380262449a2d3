//! Prometheus metrics of a serving host: per route, requests by status class, failures and a
//! latency histogram; per plugin, figures read from its instance at each scrape (state,
//! poisoned, child restarts and quarantine, log lines dropped); and reloads.
//!
//! The counters and histograms are the `prometheus` crate's: lock-free atomics. The server
//! makes the handles of a router's routes once, when it adopts the router ([`RouteTable`]), so
//! that recording a request is a few atomic adds, with no label hashing and no lock.
//!
//! Series, and their bound:
//! - one set per route of the routers in use (labels `plugin`, `method`, `route`: the route's
//!   method and pattern, never the client's path), made when a router is adopted and removed
//!   when the last router that has the route is dropped (after a reload), so that they follow
//!   the configuration and do not accumulate;
//! - one set per plugin with request or response hooks (`method=""`, `route=""`): requests that
//!   a hook answered (it responded, or failed) count there, under the hook's plugin;
//! - one set for requests no route answered (`plugin=""`, `method=""`, `route=""`): 404, 405,
//!   400 (bad path, no `Host`), 413 or 408 before a route was found, `/healthz` and `/metrics`
//!   itself, so that the request counts add up to every request answered;
//! - per plugin, the figures of the instances the current router serves, read at scrape;
//! - reloads: one counter by result, and per plugin by result, for at most
//!   [`MAX_RELOAD_SERIES`] plugin names (a plugin no longer served loses its series).

use crate::plugin::{Instance, State};
use crate::router::Router;
use parking_lot::Mutex;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// The content type of [`Metrics::render`]'s text: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The path the server answers with the metrics, before any plugin route (unless they are off
/// or served on an address of their own).
pub const METRICS_PATH: &str = "/metrics";

/// The most plugin names with reload series of their own; a reload naming another plugin
/// past it counts in `pluglet_reloads_total` only.
pub const MAX_RELOAD_SERIES: usize = 256;

/// The latency buckets, in seconds: from 50 µs (an inline call) to 10 s.
const BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The status classes, by the first digit of the status less one.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The metrics of a host. Cheap to clone: every clone records into the same counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    series: SeriesVecs,
    reloads: IntCounterVec,
    plugin_reloads: IntCounterVec,
    /// The request series answered by no route; never removed.
    unrouted: Handles,
    /// The request series that route tables use, with how many tables use each: a series is
    /// removed when the last table that uses it is dropped.
    live: Mutex<HashMap<SeriesKey, usize>>,
    /// The plugin names with reload series.
    reloaded: Mutex<HashSet<String>>,
    /// The instance names of the routers in use, with how many route tables have each: a
    /// plugin's reload series go when no router serves it any more.
    served: Mutex<HashMap<String, usize>>,
}

/// The vectors of the request series.
struct SeriesVecs {
    requests: IntCounterVec,
    errors: IntCounterVec,
    panics: IntCounterVec,
    overruns: IntCounterVec,
    latency: HistogramVec,
}

impl SeriesVecs {
    /// The handles of the series `key`, made if new.
    fn handles(&self, key: &SeriesKey) -> Handles {
        let labels = [key.0.as_str(), key.1.as_str(), key.2.as_str()];
        Handles {
            classes: CLASSES.map(|class| {
                self.requests
                    .with_label_values(&[labels[0], labels[1], labels[2], class])
            }),
            errors: self.errors.with_label_values(&labels),
            panics: self.panics.with_label_values(&labels),
            overruns: self.overruns.with_label_values(&labels),
            latency: self.latency.with_label_values(&labels),
        }
    }

    /// Removes the series `key`.
    fn remove(&self, key: &SeriesKey) {
        let labels = [key.0.as_str(), key.1.as_str(), key.2.as_str()];
        for class in CLASSES {
            let _ = self
                .requests
                .remove_label_values(&[labels[0], labels[1], labels[2], class]);
        }
        for vec in [&self.errors, &self.panics, &self.overruns] {
            let _ = vec.remove_label_values(&labels);
        }
        let _ = self.latency.remove_label_values(&labels);
    }
}

/// The labels of a set of request series: plugin, method, route.
type SeriesKey = (String, String, String);

/// What a host failure answer says of a plugin's call, for the counters beside the status
/// class (see `server::plugin_error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The call failed: an error, a process that ended, a plugin out of service.
    Error,
    /// The call panicked.
    Panic,
    /// The call ran past its deadline (504).
    Overrun,
}

impl Failure {
    /// The failure of a host answer of `kind` (its JSON body's `kind`).
    pub(crate) fn of_kind(kind: &str) -> Self {
        match kind {
            "panicked" => Failure::Panic,
            "timeout" => Failure::Overrun,
            _ => Failure::Error,
        }
    }
}

/// The handles of one set of request series: a few atomics to add to.
#[derive(Clone)]
pub(crate) struct Handles {
    classes: [IntCounter; 5],
    errors: IntCounter,
    panics: IntCounter,
    overruns: IntCounter,
    latency: Histogram,
}

impl Handles {
    /// Records one request answered `status` after `took`.
    #[inline]
    pub(crate) fn record(&self, status: u16, failure: Option<Failure>, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.classes[class].inc();
        self.latency.observe(took.as_secs_f64());
        match failure {
            None => {}
            Some(Failure::Error) => self.errors.inc(),
            Some(Failure::Panic) => self.panics.inc(),
            Some(Failure::Overrun) => self.overruns.inc(),
        }
    }
}

/// Which request series a request counts in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Series {
    /// No route answered it.
    Unrouted,
    /// Route number `.0` of the router (see `RouteMatch::id`).
    Route(usize),
    /// The hooks of hook target number `.0` answered it.
    Hook(usize),
}

/// The handles of a router's routes and hook plugins, made once when the server adopts the
/// router; the series that no other table uses are removed when it is dropped.
pub(crate) struct RouteTable {
    metrics: Metrics,
    routes: Vec<Handles>,
    hooks: Vec<Handles>,
    keys: Vec<SeriesKey>,
    /// The router's instance names (a plugin with no route and no request hook has one too).
    plugins: Vec<String>,
}

impl RouteTable {
    /// The handles of `router`'s routes and hook plugins.
    pub(crate) fn new(metrics: &Metrics, router: &Router) -> Self {
        let route_keys = router
            .routes()
            .into_iter()
            .map(|r| (r.plugin, r.method, r.path));
        let hook_keys = router
            .hook_plugins()
            .map(|plugin| (plugin.to_owned(), String::new(), String::new()));
        let keys: Vec<SeriesKey> = route_keys.chain(hook_keys).collect();
        let routes = router.routes().len();
        let mut live = metrics.inner.live.lock();
        for key in &keys {
            *live.entry(key.clone()).or_insert(0) += 1;
        }
        drop(live);
        let plugins: Vec<String> = router.plugins().into_iter().map(str::to_owned).collect();
        let mut served = metrics.inner.served.lock();
        for plugin in &plugins {
            *served.entry(plugin.clone()).or_insert(0) += 1;
        }
        drop(served);
        let series = &metrics.inner.series;
        let handles: Vec<Handles> = keys.iter().map(|key| series.handles(key)).collect();
        let (routes, hooks) = handles.split_at(routes);
        Self {
            metrics: metrics.clone(),
            routes: routes.to_vec(),
            hooks: hooks.to_vec(),
            keys,
            plugins,
        }
    }

    /// The handles of `series`.
    #[inline]
    pub(crate) fn handles(&self, series: Series) -> &Handles {
        match series {
            Series::Unrouted => &self.metrics.inner.unrouted,
            Series::Route(id) => &self.routes[id],
            Series::Hook(index) => &self.hooks[index],
        }
    }
}

impl Drop for RouteTable {
    fn drop(&mut self) {
        let inner = &self.metrics.inner;
        let mut live = inner.live.lock();
        for key in &self.keys {
            let Some(count) = live.get_mut(key) else {
                continue;
            };
            *count -= 1;
            if *count > 0 {
                continue;
            }
            live.remove(key);
            inner.series.remove(key);
        }
        drop(live);
        // The reload series of plugins no router serves any more.
        let mut served = inner.served.lock();
        for plugin in &self.plugins {
            if let Some(count) = served.get_mut(plugin) {
                *count -= 1;
                if *count == 0 {
                    served.remove(plugin);
                }
            }
        }
        let mut reloaded = inner.reloaded.lock();
        reloaded.retain(|plugin| {
            let keep = served.contains_key(plugin.as_str());
            if !keep {
                for result in ["ok", "failed"] {
                    let _ = inner.plugin_reloads.remove_label_values(&[plugin, result]);
                }
            }
            keep
        });
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// New metrics, every counter at zero.
    pub fn new() -> Self {
        let series = ["plugin", "method", "route"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
        };
        let requests = counter(
            "pluglet_requests_total",
            "Requests answered, by the route that answered them (plugin=\"\" route=\"\": no route; route=\"\": a plugin's hook) and status class.",
            &["plugin", "method", "route", "class"],
        );
        let errors = counter(
            "pluglet_errors_total",
            "Requests answered with a failure of the plugin's call other than a panic or a deadline overrun: a handler or hook error, a process that ended, a plugin out of service (500, 502, 503).",
            &series,
        );
        let panics = counter(
            "pluglet_panics_total",
            "Requests whose handler or hook panicked (500).",
            &series,
        );
        let overruns = counter(
            "pluglet_deadline_overruns_total",
            "Requests whose handler or hook ran past its deadline (504).",
            &series,
        );
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "pluglet_request_duration_seconds",
                "How long requests took, from their head to their answer, in seconds.",
            )
            .buckets(BUCKETS.to_vec()),
            &series,
        )
        .expect("a valid metric");
        let reloads = counter(
            "pluglet_reloads_total",
            "Reloads of the configuration, by result.",
            &["result"],
        );
        let plugin_reloads = counter(
            "pluglet_plugin_reloads_total",
            "Reloads that added or replaced the plugin (ok), or failed naming it (failed).",
            &["plugin", "result"],
        );
        let registry = Registry::new();
        for collector in [
            &requests,
            &errors,
            &panics,
            &overruns,
            &reloads,
            &plugin_reloads,
        ] {
            registry
                .register(Box::new(collector.clone()))
                .expect("metric names are unique");
        }
        registry
            .register(Box::new(latency.clone()))
            .expect("metric names are unique");
        let series = SeriesVecs {
            requests,
            errors,
            panics,
            overruns,
            latency,
        };
        let unrouted = series.handles(&(String::new(), String::new(), String::new()));
        Self {
            inner: Arc::new(Inner {
                registry,
                series,
                reloads,
                plugin_reloads,
                unrouted,
                live: Mutex::new(HashMap::new()),
                reloaded: Mutex::new(HashSet::new()),
                served: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Counts a reload: `ok`, with the instance names it added or replaced, or failed, with
    /// the plugin its failure names, if any.
    pub fn reloaded(&self, ok: bool, plugins: &[&str]) {
        let result = if ok { "ok" } else { "failed" };
        let inner = &self.inner;
        inner.reloads.with_label_values(&[result]).inc();
        let mut reloaded = inner.reloaded.lock();
        for plugin in plugins {
            if !reloaded.contains(*plugin) {
                if reloaded.len() >= MAX_RELOAD_SERIES {
                    continue;
                }
                reloaded.insert((*plugin).to_owned());
            }
            inner
                .plugin_reloads
                .with_label_values(&[plugin, &result])
                .inc();
        }
    }

    /// The metrics in the Prometheus text format: the counters, and the figures of the
    /// instances `router` serves, read now.
    pub fn render(&self, router: &Router) -> String {
        let mut families = self.inner.registry.gather();
        families.extend(PluginFigures::new(router.instances()).collect());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&families, &mut text)
            .expect("the text encoder writes to memory");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

/// The per-plugin figures, read from the instances at a scrape: a collector made for it.
struct PluginFigures {
    state: IntGaugeVec,
    poisoned: IntGaugeVec,
    past_deadline: IntCounterVec,
    dropped: IntCounterVec,
    restarts: IntCounterVec,
    quarantined: IntGaugeVec,
    process_state: IntGaugeVec,
}

impl PluginFigures {
    /// The figures of `instances`, read now.
    fn new<'r>(instances: impl Iterator<Item = &'r Instance>) -> Self {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric")
        };
        let counter = |name: &str, help: &str| {
            IntCounterVec::new(Opts::new(name, help), &["plugin"]).expect("a valid metric")
        };
        let figures = Self {
            state: gauge(
                "pluglet_plugin_state",
                "The instance's state (created, started, stopped, failed): 1 for the current one.",
                &["plugin", "state"],
            ),
            poisoned: gauge(
                "pluglet_plugin_poisoned",
                "1 when a panic put the instance out of service, else 0.",
                &["plugin"],
            ),
            past_deadline: counter(
                "pluglet_plugin_calls_past_deadline_total",
                "Calls of the instance (handlers, hooks) that ran past their deadline.",
            ),
            dropped: counter(
                "pluglet_plugin_log_lines_dropped_total",
                "Lines the instance logged that its log rate limit dropped.",
            ),
            restarts: counter(
                "pluglet_plugin_restarts_total",
                "Plugins in a child process: how many times a new child replaced one that ended.",
            ),
            quarantined: gauge(
                "pluglet_plugin_quarantined",
                "Plugins in a child process: 1 when it crashed too often and is not restarted, else 0.",
                &["plugin"],
            ),
            process_state: gauge(
                "pluglet_plugin_process_state",
                "Plugins in a child process: the child's state (starting, serving, restarting, quarantined, stopped): 1 for the current one.",
                &["plugin", "state"],
            ),
        };
        for instance in instances {
            let plugin = instance.name();
            let state = instance.state();
            figures
                .state
                .with_label_values(&[plugin, state.as_str()])
                .set(1);
            figures.poisoned.with_label_values(&[plugin]).set(i64::from(
                instance.poisoned().is_some() && state == State::Started,
            ));
            let (past, _) = instance.calls_past_deadline();
            figures
                .past_deadline
                .with_label_values(&[plugin])
                .inc_by(past);
            figures
                .dropped
                .with_label_values(&[plugin])
                .inc_by(instance.log_lines_dropped());
            if let (Some((_, _, child)), Some(restarts)) = (instance.process(), instance.restarts())
            {
                figures
                    .restarts
                    .with_label_values(&[plugin])
                    .inc_by(restarts);
                let quarantined = child == crate::process::ChildState::Quarantined;
                figures
                    .quarantined
                    .with_label_values(&[plugin])
                    .set(i64::from(quarantined));
                figures
                    .process_state
                    .with_label_values(&[plugin, child.as_str()])
                    .set(1);
            }
        }
        figures
    }
}

impl Collector for PluginFigures {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs = Vec::new();
        for gauge in [
            &self.state,
            &self.poisoned,
            &self.quarantined,
            &self.process_state,
        ] {
            descs.extend(gauge.desc());
        }
        for counter in [&self.past_deadline, &self.dropped, &self.restarts] {
            descs.extend(counter.desc());
        }
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = Vec::new();
        for gauge in [
            &self.state,
            &self.poisoned,
            &self.quarantined,
            &self.process_state,
        ] {
            families.extend(gauge.collect());
        }
        for counter in [&self.past_deadline, &self.dropped, &self.restarts] {
            families.extend(counter.collect());
        }
        // A vector without a series (no plugin in a process) has no family to show.
        families.retain(|family| !family.get_metric().is_empty());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'t>(text: &'t str, start: &str) -> Option<&'t str> {
        text.lines().find(|line| line.starts_with(start))
    }

    #[test]
    fn a_request_counts_in_its_class_latency_and_failure() {
        let metrics = Metrics::new();
        let unrouted = &metrics.inner.unrouted;
        unrouted.record(404, None, Duration::from_micros(30));
        unrouted.record(200, None, Duration::from_millis(2));
        unrouted.record(500, Some(Failure::Panic), Duration::from_millis(2));
        unrouted.record(504, Some(Failure::Overrun), Duration::from_secs(20));
        unrouted.record(503, Some(Failure::Error), Duration::from_millis(1));
        let text = metrics.render(&Router::build(&[]).unwrap());
        let labels = r#"method="",plugin="",route="""#;
        for (name, value) in [
            (
                format!(r#"pluglet_requests_total{{class="4xx",{labels}}}"#),
                "1",
            ),
            (
                format!(r#"pluglet_requests_total{{class="2xx",{labels}}}"#),
                "1",
            ),
            (
                format!(r#"pluglet_requests_total{{class="5xx",{labels}}}"#),
                "3",
            ),
            (format!("pluglet_panics_total{{{labels}}}"), "1"),
            (format!("pluglet_deadline_overruns_total{{{labels}}}"), "1"),
            (format!("pluglet_errors_total{{{labels}}}"), "1"),
            (
                format!("pluglet_request_duration_seconds_count{{{labels}}}"),
                "5",
            ),
            (
                format!(r#"pluglet_request_duration_seconds_bucket{{{labels},le="0.00005"}}"#),
                "1",
            ),
            (
                format!(r#"pluglet_request_duration_seconds_bucket{{{labels},le="10"}}"#),
                "4",
            ),
        ] {
            let found =
                line(&text, &format!("{name} ")).unwrap_or_else(|| panic!("{name} in {text}"));
            assert_eq!(found, format!("{name} {value}"), "{text}");
        }
        assert!(
            text.contains("# HELP pluglet_requests_total Requests answered"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pluglet_request_duration_seconds histogram"),
            "{text}"
        );
    }

    #[test]
    fn reloads_count_by_result_and_plugin_up_to_the_cap() {
        let metrics = Metrics::new();
        metrics.reloaded(true, &["a", "b"]);
        metrics.reloaded(false, &["a"]);
        metrics.reloaded(false, &[]);
        let names: Vec<String> = (0..MAX_RELOAD_SERIES + 10)
            .map(|i| format!("p{i}"))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        metrics.reloaded(true, &names);
        let text = metrics.render(&Router::build(&[]).unwrap());
        assert!(
            text.contains("pluglet_reloads_total{result=\"ok\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("pluglet_reloads_total{result=\"failed\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("pluglet_plugin_reloads_total{plugin=\"a\",result=\"ok\"} 1\n"));
        assert!(text.contains("pluglet_plugin_reloads_total{plugin=\"a\",result=\"failed\"} 1\n"));
        let series = text
            .lines()
            .filter(|l| l.starts_with("pluglet_plugin_reloads_total{"))
            .count();
        // "a" twice (ok, failed), then one each up to the cap.
        assert_eq!(series, MAX_RELOAD_SERIES + 1, "{text}");
    }

    #[test]
    fn failure_kinds() {
        assert_eq!(Failure::of_kind("panicked"), Failure::Panic);
        assert_eq!(Failure::of_kind("timeout"), Failure::Overrun);
        assert_eq!(Failure::of_kind("failed"), Failure::Error);
        assert_eq!(Failure::of_kind("poisoned"), Failure::Error);
    }
}
