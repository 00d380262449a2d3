//! Loading and starting 100 plugins against raw `dlopen` of the same 100 files.
//!
//! Run: `cargo bench -p pluglet-host --bench loading`. The 100 files are copies of the C
//! `greeter` sample under distinct names. Per iteration:
//! - `raw dlopen`: `dlopen` (libloading, `RTLD_NOW | RTLD_LOCAL`) and `dlsym("plugin_factory")`
//!   of each file;
//! - `plugin-host`: `Factory::load` (open, factory call, descriptor validation), `create`,
//!   `register` and `start_all` (start and route listing) of each.
//!
//! Unloading (`dlclose`, and for plugin-host `stop` and `destroy`) happens outside the timed
//! part, so that every iteration loads fresh. The goal is plugin-host within 2x of raw dlopen.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use plugin_host::{Factory, Registry};
use std::path::PathBuf;

fn copies() -> Vec<PathBuf> {
    let greeter = &sample_plugins::samples().greeter;
    let dir = std::env::temp_dir().join(format!("plugin-host-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    (0..100)
        .map(|i| {
            let path = dir.join(sample_plugins::compile::library_file_name(&format!(
                "plugin{i:03}"
            )));
            std::fs::copy(greeter, &path).unwrap();
            path
        })
        .collect()
}

fn open(path: &PathBuf) -> libloading::Library {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    // SAFETY: the file is a copy of the greeter sample, whose initialisers are harmless.
    unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .unwrap()
        .into()
}

fn loading(c: &mut Criterion) {
    let files = copies();
    let mut group = c.benchmark_group("load 100 plugins");
    group.sample_size(30);
    group.bench_function("raw dlopen + dlsym", |b| {
        b.iter_batched(
            || (),
            |()| {
                files
                    .iter()
                    .map(|path| {
                        let library = open(path);
                        // SAFETY: only the symbol's presence is checked; it is never called.
                        let symbol =
                            unsafe { library.get::<unsafe extern "C" fn()>(b"plugin_factory\0") };
                        assert!(symbol.is_ok());
                        library
                    })
                    .collect::<Vec<_>>()
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("plugin-host load + create + start", |b| {
        b.iter_batched(
            || (),
            |()| {
                let registry = Registry::new();
                for path in &files {
                    let factory = Factory::load(path).unwrap();
                    let name = path.file_stem().unwrap().to_string_lossy();
                    registry
                        .register(factory.create(&name, &serde_json::json!({})).unwrap())
                        .unwrap();
                }
                registry.start_all().unwrap_or_else(|e| panic!("{e}"));
                StopOnDrop(registry)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
    let _ = std::fs::remove_dir_all(files[0].parent().unwrap());
}

/// Stops the plugins when criterion drops the iteration's output, outside the timed part.
struct StopOnDrop(Registry);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop_all();
    }
}

criterion_group!(benches, loading);
criterion_main!(benches);
