//! The registries: names, order, duplicates, lifecycle order and misuse, built-in plugins.

use crate::util::{LogLine, capture_logs, faulty, logs_of, samples, unique};
use plugin_api::{Host, NoConfig, Plugin, Request, Response, Result, Routes};
use plugin_host::{ErrorKind, Factory, FactoryRegistry, Registry, State};
use serde_json::json;

/// A plugin compiled into the test binary: no shared library involved.
struct Builtin {
    host: Host,
}

impl Plugin for Builtin {
    const NAME: &'static str = "builtin";
    const VERSION: &'static str = "9.9.9";
    type Config = NoConfig;

    fn create(_: NoConfig, host: Host) -> Result<Self> {
        Ok(Self { host })
    }

    fn start(&self) -> Result<()> {
        self.host.info("starting");
        Ok(())
    }

    fn stop(&self) -> Result<()> {
        self.host.info("stopping");
        Ok(())
    }

    fn routes(&self, routes: &mut Routes<'_, Self>) -> Result<()> {
        routes.get(
            "/builtin/{what}",
            |_, request: &Request<'_>, response: &mut Response<'_>| {
                response.text(&format!(
                    "built-in {}",
                    request.param("what").unwrap_or("?")
                ))
            },
        )?;
        Ok(())
    }
}

fn line(instance: &str, message: &str) -> LogLine {
    LogLine {
        instance: instance.to_owned(),
        message: message.to_owned(),
    }
}

/// Registers one instance of each sample (and the built-in plugin) under unique names.
fn registry_of_all() -> (Registry, Vec<String>) {
    let s = samples();
    let registry = Registry::new();
    let mut names = Vec::new();
    for path in [&s.greeter, &s.hello, &s.wordcount, &s.counter] {
        let factory = Factory::load(path).unwrap();
        let name = unique(factory.name());
        registry
            .register(factory.create(&name, &json!({})).unwrap())
            .unwrap();
        names.push(name);
    }
    let name = unique("builtin");
    let builtin = Factory::builtin::<Builtin>().unwrap();
    registry
        .register(builtin.create(&name, &json!({})).unwrap())
        .unwrap();
    names.push(name);
    (registry, names)
}

#[test]
fn names_keep_insertion_order() {
    let (registry, names) = registry_of_all();
    assert_eq!(registry.names(), names);
    let removed = registry.unregister(&names[1]).unwrap();
    assert_eq!(removed.name(), names[1]);
    let mut expected = names.clone();
    expected.remove(1);
    assert_eq!(registry.names(), expected);
    assert!(registry.get(&names[1]).is_none());
    assert_eq!(registry.get(&names[0]).unwrap().plugin_name(), "greeter");
}

#[test]
fn start_in_order_and_stop_in_reverse_as_the_plugins_log_it() {
    capture_logs();
    let (registry, names) = registry_of_all();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    for name in &names {
        assert_eq!(registry.get(name).unwrap().state(), State::Started);
    }
    registry.stop_all().unwrap_or_else(|e| panic!("{e}"));
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut expected: Vec<LogLine> = refs.iter().map(|n| line(n, "starting")).collect();
    expected.extend(refs.iter().rev().map(|n| line(n, "stopping")));
    assert_eq!(logs_of(&refs), expected);
}

#[test]
fn a_failed_start_rolls_back_in_reverse_and_reports_every_error() {
    capture_logs();
    let s = samples();
    let registry = Registry::new();
    let hello = unique("hello");
    let broken = unique("faulty");
    let greeter = unique("greeter");
    registry
        .register(
            Factory::load(&s.hello)
                .unwrap()
                .create(&hello, &json!({}))
                .unwrap(),
        )
        .unwrap();
    let faulty_factory = Factory::load(faulty()).unwrap();
    registry
        .register(
            faulty_factory
                .create(&broken, &json!({ "fail_in": "start" }))
                .unwrap(),
        )
        .unwrap();
    registry
        .register(
            Factory::load(&s.greeter)
                .unwrap()
                .create(&greeter, &json!({}))
                .unwrap(),
        )
        .unwrap();
    let errors = registry.start_all().expect_err("start fails").0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(errors[0].kind(), ErrorKind::StartFailed { reason } if reason == "deliberate failure in start")
    );
    assert_eq!(errors[0].plugin(), Some(broken.as_str()));
    assert_eq!(registry.get(&hello).unwrap().state(), State::Stopped);
    assert_eq!(registry.get(&broken).unwrap().state(), State::Failed);
    assert_eq!(registry.get(&greeter).unwrap().state(), State::Created);
    assert_eq!(
        logs_of(&[&hello, &greeter]),
        vec![line(&hello, "starting"), line(&hello, "stopping")]
    );
}

#[test]
fn stop_all_returns_every_error_in_reverse_order() {
    let registry = Registry::new();
    let factory = Factory::load(faulty()).unwrap();
    let names = [unique("faulty"), unique("faulty")];
    for (i, name) in names.iter().enumerate() {
        let config = json!({ "fail_in": "stop", "path": format!("/f{i}") });
        registry
            .register(factory.create(name, &config).unwrap())
            .unwrap();
    }
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let errors = registry.stop_all().expect_err("stop fails").0;
    let plugins: Vec<_> = errors
        .iter()
        .map(|e| e.plugin().unwrap().to_owned())
        .collect();
    assert_eq!(plugins, [names[1].clone(), names[0].clone()]);
    for error in &errors {
        assert!(
            matches!(error.kind(), ErrorKind::StopFailed { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains(&faulty().display().to_string()),
            "{error}"
        );
    }
}

#[test]
fn duplicate_names_are_refused() {
    let s = samples();
    let factories = FactoryRegistry::new();
    factories.load(&s.hello).unwrap();
    let error = factories.load(&s.hello).err().expect("duplicate factory");
    assert!(
        matches!(error.kind(), ErrorKind::Duplicate { what: "factory", name } if name == "hello")
    );
    assert!(
        error.to_string().contains(&s.hello.display().to_string()),
        "{error}"
    );

    let registry = Registry::new();
    registry
        .register(factories.create("hello", "twin", &json!({})).unwrap())
        .unwrap();
    let error = registry
        .register(factories.create("hello", "twin", &json!({})).unwrap())
        .expect_err("duplicate instance");
    assert!(
        matches!(error.kind(), ErrorKind::Duplicate { what: "plugin", name } if name == "twin")
    );
    assert!(
        error.to_string().contains(&s.hello.display().to_string()),
        "{error}"
    );
}

#[test]
fn unknown_names_are_errors() {
    let factories = FactoryRegistry::new();
    let error = factories
        .create("nope", "x", &json!({}))
        .err()
        .expect("unknown");
    assert!(matches!(
        error.kind(),
        ErrorKind::Unknown {
            what: "factory",
            ..
        }
    ));
    let error = Registry::new().unregister("nope").err().expect("unknown");
    assert!(matches!(
        error.kind(),
        ErrorKind::Unknown { what: "plugin", .. }
    ));
}

#[test]
fn several_instances_of_one_library_have_their_own_configuration() {
    let factories = FactoryRegistry::new();
    factories.load(&samples().counter).unwrap();
    let registry = Registry::new();
    for (name, config) in [
        ("tens", json!({ "path": "/tens", "start": 10, "step": 10 })),
        ("ones", json!({ "path": "/ones", "start": 1 })),
    ] {
        registry
            .register(factories.create("counter", name, &config).unwrap())
            .unwrap();
    }
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let body = |method, path| {
        let response = router
            .dispatch(&plugin_host::Request::new(method, path))
            .unwrap();
        String::from_utf8(response.body).unwrap()
    };
    assert_eq!(body("POST", "/tens"), r#"{"value":20}"#);
    assert_eq!(body("POST", "/ones"), r#"{"value":2}"#);
    assert_eq!(body("GET", "/tens"), r#"{"value":20}"#);
    assert_eq!(registry.get("tens").unwrap().plugin_name(), "counter");
}

#[test]
fn built_in_and_loaded_plugins_serve_side_by_side() {
    let registry = Registry::new();
    let builtin = Factory::builtin::<Builtin>().unwrap();
    assert_eq!(
        (builtin.name(), builtin.version(), builtin.file()),
        ("builtin", "9.9.9", None)
    );
    registry
        .register(builtin.create("builtin", &json!({})).unwrap())
        .unwrap();
    let greeter = Factory::load(&samples().greeter).unwrap();
    registry
        .register(greeter.create("greeter", &json!({})).unwrap())
        .unwrap();
    registry.start_all().unwrap_or_else(|e| panic!("{e}"));
    let router = registry.router().unwrap();
    let response = router
        .dispatch(&plugin_host::Request::new("GET", "/builtin/thing"))
        .unwrap();
    assert_eq!(response.body, b"built-in thing");
    let response = router
        .dispatch(&plugin_host::Request::new("GET", "/greet/ada"))
        .unwrap();
    assert_eq!(response.body, b"Hello, ada!");
}

#[test]
fn lifecycle_calls_that_do_not_fit_the_state_are_refused() {
    let path = &samples().hello;
    let instance = Factory::load(path)
        .unwrap()
        .create("hello", &json!({}))
        .unwrap();
    let error = instance.stop().expect_err("stop before start");
    assert!(matches!(
        error.kind(),
        ErrorKind::InvalidState {
            action: "stop",
            state: "created"
        }
    ));
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    instance.start().unwrap();
    let error = instance.start().expect_err("start twice");
    assert!(matches!(
        error.kind(),
        ErrorKind::InvalidState {
            action: "start",
            state: "started"
        }
    ));

    let registry = Registry::new();
    registry.register(instance.clone()).unwrap();
    let router = registry.router().unwrap();
    let error = instance.stop().expect_err("stop while routed");
    assert!(
        matches!(error.kind(), ErrorKind::InUse { routers: 1 }),
        "{error}"
    );
    drop(router);
    instance.stop().unwrap();
    let error = instance.stop().expect_err("stop twice");
    assert!(matches!(
        error.kind(),
        ErrorKind::InvalidState {
            action: "stop",
            state: "stopped"
        }
    ));
    // A handler after stop cannot happen: a new router no longer serves the stopped instance.
    let router = registry.router().unwrap();
    let error = router
        .dispatch(&plugin_host::Request::new("GET", "/hello"))
        .expect_err("not routed");
    assert!(
        matches!(error.kind(), ErrorKind::RouteNotFound { .. }),
        "{error:?}"
    );
}
