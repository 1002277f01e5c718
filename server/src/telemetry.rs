//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info` for Flywheel, `warn` for
//! everything else, mistral.rs included).

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,flywheel_server=info,flywheel_store=info,flywheel_trainer=info")
    });
    // `try_init`: tests may call this more than once in one process.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
