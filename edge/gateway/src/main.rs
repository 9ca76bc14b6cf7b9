//! `chorus-edge [--config edge.toml] [--log-format text|json]`: the edge gateway alone
//! (`chorus up` runs it with a core).

const USAGE: &str = "usage: chorus-edge [--config edge.toml] [--log-format text|json]";

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut config = None;
    let mut log_format = chorus_process::LogFormat::Text;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--config", Some(path)) => config = Some(path),
            ("--log-format", Some(f)) => log_format = f.parse().map_err(|e| anyhow::anyhow!("--log-format: {e}"))?,
            _ => anyhow::bail!("{USAGE}"),
        }
    }
    chorus_process::init_logging(log_format);
    let cfg = match config {
        Some(path) => chorus_edge::EdgeConfig::load(std::path::Path::new(&path))?,
        None => chorus_edge::EdgeConfig::default(),
    };
    chorus_edge::run(cfg)
}
