//! `chorus-edge [--config edge.toml]`: the edge gateway alone (`chorus up` runs it with a core).

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let cfg = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(path)) => chorus_edge::EdgeConfig::load(std::path::Path::new(&path))?,
        (None, _) => chorus_edge::EdgeConfig::default(),
        _ => anyhow::bail!("usage: chorus-edge [--config edge.toml]"),
    };
    chorus_edge::run(cfg)
}
