//! An application with its own axum server mounts every plugin route under `/plugins`.
//!
//! Run: `cargo run -p pluglet-host --example axum_mount`, then
//! `curl localhost:3000/` and `curl localhost:3000/plugins/greet/ada`.

use plugin_host::server::PluginService;
use plugin_host::{Factory, Registry};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples = sample_plugins::samples();
    let registry = Registry::new();
    for path in [&samples.hello, &samples.greeter] {
        let factory = Factory::load(path)?;
        registry.register(factory.create(factory.name(), &serde_json::json!({}))?)?;
    }
    registry.start_all()?;

    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { "the application's own route\n" }),
        )
        .nest_service("/plugins", PluginService::new(registry.router()?));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    registry.stop_all()?;
    Ok(())
}
