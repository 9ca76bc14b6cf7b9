//! Operators' files, checked without a cloud, a Terraform binary or a Docker daemon:
//! - every provisioned region file renders to exactly the committed env variables;
//! - every `.tf` file parses, and every `var.`, `local.`, `module.`, `data.` and resource
//!   reference resolves; every module call passes each required variable and nothing else;
//! - every region of a rendered env has its provider, region module and peerings;
//! - start-up templates get exactly the variables they use;
//! - the Dockerfile runs the binary the CLI builds, with the ports the configs default to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chorus_edge::provision::{self, RenderError};
use chorus_edge::regions::RegionFile;
use hcl_edit::expr::{Expression, FuncCall, ObjectKey, Traversal, TraversalOperator};
use hcl_edit::structure::{Block, Body};
use hcl_edit::visit::{self, Visit};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    out
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
    out.sort();
    out
}

#[test]
fn committed_envs_are_what_the_region_files_render() {
    let envs = root().join("terraform/envs");
    let mut rendered = BTreeSet::new();
    for file in files(&root().join("regions"), "toml") {
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        match provision::render_file(&file) {
            Ok(json) => {
                let committed = envs.join(&stem).join(provision::TFVARS_FILE);
                let have = std::fs::read_to_string(&committed).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; run `chorus regions render {} --out terraform/envs/{stem}`",
                        committed.display(),
                        file.display()
                    )
                });
                assert!(
                    have == json,
                    "{} differs from what {} renders; run `chorus regions render {} --out terraform/envs/{stem}`",
                    committed.display(),
                    file.display(),
                    file.display()
                );
                rendered.insert(stem);
            }
            Err(RenderError::NotProvisioned(_)) => {
                assert!(
                    !envs.join(&stem).exists(),
                    "terraform/envs/{stem} exists but {} has no [provision]",
                    file.display()
                );
            }
            Err(e) => panic!("{e}"),
        }
    }
    let dirs: BTreeSet<String> =
        subdirs(&envs).iter().map(|d| d.file_name().unwrap().to_string_lossy().to_string()).collect();
    assert_eq!(dirs, rendered, "every env comes from a region file and every provisioned file has an env");
    assert!(!rendered.is_empty(), "regions/ ships a provisioned file");
}

/// What one Terraform module (a directory of `.tf` files) declares and references.
#[derive(Debug, Default)]
struct Module {
    dir: PathBuf,
    /// name → has a default
    variables: BTreeMap<String, bool>,
    locals: BTreeSet<String>,
    outputs: BTreeSet<String>,
    resources: BTreeSet<(String, String)>,
    data: BTreeSet<(String, String)>,
    calls: BTreeMap<String, Block>,
    providers: Vec<Block>,
    /// Providers this module names in `required_providers` (resource type prefixes).
    required: BTreeSet<String>,
    bodies: Vec<(PathBuf, Body)>,
}

fn label(b: &Block, i: usize) -> String {
    b.labels.get(i).map(|l| l.as_str().to_string()).unwrap_or_default()
}

fn load_module(dir: &Path) -> Module {
    let mut m = Module { dir: dir.to_path_buf(), ..Default::default() };
    let tf = files(dir, "tf");
    assert!(!tf.is_empty(), "{}: no .tf files", dir.display());
    for path in tf {
        let text = std::fs::read_to_string(&path).unwrap();
        let body = hcl_edit::parser::parse_body(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for b in body.blocks() {
            match b.ident.as_str() {
                "variable" => {
                    m.variables.insert(label(b, 0), b.body.has_attribute("default"));
                }
                "locals" => m.locals.extend(b.body.attributes().map(|a| a.key.as_str().to_string())),
                "output" => {
                    m.outputs.insert(label(b, 0));
                }
                "resource" => {
                    m.resources.insert((label(b, 0), label(b, 1)));
                }
                "data" => {
                    m.data.insert((label(b, 0), label(b, 1)));
                }
                "module" => {
                    m.calls.insert(label(b, 0), b.clone());
                }
                "provider" => m.providers.push(b.clone()),
                "terraform" => {
                    for rp in b.body.get_blocks("required_providers") {
                        m.required.extend(rp.body.attributes().map(|a| a.key.as_str().to_string()));
                    }
                }
                other => panic!("{}: unexpected top-level block `{other}`", path.display()),
            }
        }
        m.bodies.push((path, body));
    }
    m
}

/// Every reference `root.a.b` in a body, as the idents after the root.
#[derive(Default)]
struct Refs {
    found: Vec<(String, Vec<String>)>,
    calls: Vec<FuncCall>,
}

impl Visit for Refs {
    fn visit_traversal(&mut self, node: &Traversal) {
        if let Expression::Variable(v) = &node.expr {
            let rest = node
                .operators
                .iter()
                .map_while(|op| match &**op {
                    TraversalOperator::GetAttr(id) => Some(id.as_str().to_string()),
                    _ => None,
                })
                .collect();
            self.found.push((v.as_str().to_string(), rest));
        }
        visit::visit_traversal(self, node);
    }

    fn visit_func_call(&mut self, node: &FuncCall) {
        self.calls.push(node.clone());
        visit::visit_func_call(self, node);
    }
}

fn refs(body: &Body) -> Refs {
    let mut r = Refs::default();
    r.visit_body(body);
    r
}

fn all_modules() -> Vec<Module> {
    let tf = root().join("terraform");
    subdirs(&tf.join("modules")).into_iter().chain(subdirs(&tf.join("envs"))).map(|d| load_module(&d)).collect()
}

#[test]
fn every_reference_resolves_and_every_call_passes_what_the_module_needs() {
    let modules = all_modules();
    let by_dir: BTreeMap<PathBuf, &Module> = modules.iter().map(|m| (m.dir.canonicalize().unwrap(), m)).collect();
    let mut problems = Vec::new();
    let mut checked = 0;
    for m in &modules {
        assert!(m.required.contains("aws"), "{}: required_providers names aws", m.dir.display());
        for (path, body) in &m.bodies {
            let at = path.strip_prefix(root()).unwrap_or(path).display().to_string();
            for (root_name, rest) in refs(body).found {
                checked += 1;
                let first = rest.first().cloned().unwrap_or_default();
                let ok = match root_name.as_str() {
                    "var" => m.variables.contains_key(&first),
                    "local" => m.locals.contains(&first),
                    "data" => m.data.contains(&(first.clone(), rest.get(1).cloned().unwrap_or_default())),
                    "module" => match m.calls.get(&first) {
                        None => false,
                        Some(call) => match (rest.get(1), module_source(m, call).and_then(|d| by_dir.get(&d))) {
                            (Some(out), Some(callee)) => callee.outputs.contains(out),
                            (None, _) => true,
                            (Some(_), None) => false,
                        },
                    },
                    r if m.required.iter().any(|p| r.starts_with(&format!("{p}_"))) => {
                        m.resources.contains(&(r.to_string(), first.clone()))
                    }
                    _ => true, // each, count, path, self, for-expression and iterator variables
                };
                if !ok {
                    problems.push(format!("{at}: `{root_name}.{}` resolves to nothing", rest.join(".")));
                }
            }
        }
        for (name, call) in &m.calls {
            let Some(dir) = module_source(m, call) else {
                problems.push(format!("{}: module {name}: no local source", m.dir.display()));
                continue;
            };
            let Some(callee) = by_dir.get(&dir) else {
                problems.push(format!(
                    "{}: module {name}: source {} is not a module here",
                    m.dir.display(),
                    dir.display()
                ));
                continue;
            };
            let meta = ["source", "providers", "count", "for_each", "depends_on", "version"];
            let passed: BTreeSet<String> = call
                .body
                .attributes()
                .map(|a| a.key.as_str().to_string())
                .filter(|k| !meta.contains(&k.as_str()))
                .collect();
            for p in &passed {
                if !callee.variables.contains_key(p) {
                    problems.push(format!(
                        "{}: module {name} passes `{p}`, which {} does not declare",
                        m.dir.display(),
                        dir.display()
                    ));
                }
            }
            for (v, has_default) in &callee.variables {
                if !has_default && !passed.contains(v) {
                    problems.push(format!("{}: module {name} does not pass required `{v}`", m.dir.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked > 300, "the walk saw {checked} references");
}

fn module_source(m: &Module, call: &Block) -> Option<PathBuf> {
    let src = call.body.get_attribute("source")?.value.as_str()?.to_string();
    src.starts_with('.').then(|| m.dir.join(src)).and_then(|p| p.canonicalize().ok())
}

fn snake(region: &str) -> String {
    region.replace('-', "_")
}

#[test]
fn every_rendered_region_has_its_provider_module_and_peerings() {
    let envs = root().join("terraform/envs");
    for dir in subdirs(&envs) {
        let vars: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(provision::TFVARS_FILE)).unwrap()).unwrap();
        let regions: Vec<String> = vars["regions"].as_object().unwrap().keys().cloned().collect();
        let m = load_module(&dir);
        let aliases: BTreeSet<String> = m
            .providers
            .iter()
            .filter_map(|p| p.body.get_attribute("alias").and_then(|a| a.value.as_str().map(str::to_string)))
            .collect();
        for r in &regions {
            let s = snake(r);
            assert!(aliases.contains(&s), "{}: no provider alias {s} for region {r}", dir.display());
            let provider = m
                .providers
                .iter()
                .find(|p| p.body.get_attribute("alias").and_then(|a| a.value.as_str()) == Some(&s))
                .unwrap();
            let region_expr = provider.body.get_attribute("region").unwrap().value.to_string();
            assert!(
                region_expr.contains(&format!("var.regions[\"{r}\"].cloud_region")),
                "provider {s}: region = {region_expr}"
            );
            let call = m
                .calls
                .get(&format!("region_{s}"))
                .unwrap_or_else(|| panic!("{}: no module region_{s}", dir.display()));
            assert_eq!(
                call.body.get_attribute("name").and_then(|a| a.value.as_str()),
                Some(r.as_str()),
                "region_{s}.name"
            );
            let providers = call.body.get_attribute("providers").unwrap().value.to_string();
            assert!(providers.contains(&format!("aws.{s}")), "region_{s} uses provider aws.{s}: {providers}");
            for attr in call.body.attributes() {
                let text = attr.value.to_string();
                if text.contains("var.regions[") {
                    assert!(
                        text.contains(&format!("var.regions[\"{r}\"]")),
                        "region_{s}.{} reads another region: {text}",
                        attr.key.as_str()
                    );
                }
            }
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                let found = m.calls.keys().any(|k| {
                    k == &format!("peer_{}_{}", snake(a), snake(b)) || k == &format!("peer_{}_{}", snake(b), snake(a))
                });
                assert!(found, "{}: no peering between {a} and {b}", dir.display());
            }
        }
        let region_calls = m.calls.keys().filter(|k| k.starts_with("region_")).count();
        assert_eq!(region_calls, regions.len(), "{}: one region module per rendered region", dir.display());
    }
}

#[test]
fn start_up_templates_get_exactly_the_variables_they_use() {
    let dir = root().join("terraform/modules/region");
    let m = load_module(&dir);
    let mut seen = 0;
    for (path, body) in &m.bodies {
        for call in refs(body).calls {
            if call.name.name.as_str() != "templatefile" {
                continue;
            }
            let args: Vec<&Expression> = call.args.iter().collect();
            let file = args[0].to_string();
            let name = file.rsplit('/').next().unwrap().trim_matches(|c| c == '"' || c == ' ').to_string();
            let Expression::Object(obj) = args[1] else {
                panic!("{}: templatefile vars are an object", path.display())
            };
            let given: BTreeSet<String> = obj
                .iter()
                .map(|(k, _)| match k {
                    ObjectKey::Ident(i) => i.as_str().to_string(),
                    ObjectKey::Expression(e) => e.to_string(),
                })
                .collect();
            let text = std::fs::read_to_string(dir.join("templates").join(&name)).unwrap();
            let template = hcl_edit::parser::parse_template(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut used = Refs::default();
            used.visit_template(&template);
            let mut used_roots: BTreeSet<String> = used.found.iter().map(|(r, _)| r.clone()).collect();
            used_roots.extend(template_variables(&template));
            assert_eq!(used_roots, given, "{name}: variables used vs passed");
            seen += 1;
        }
    }
    assert_eq!(seen, 2, "the core and edge start-up templates");
}

/// Bare variables (`${image}`) in a template; traversals are collected by `Refs`.
fn template_variables(t: &hcl_edit::template::Template) -> BTreeSet<String> {
    #[derive(Default)]
    struct Bare(BTreeSet<String>);
    impl Visit for Bare {
        fn visit_expr(&mut self, e: &Expression) {
            if let Expression::Variable(v) = e {
                self.0.insert(v.as_str().to_string());
            }
            visit::visit_expr(self, e);
        }
    }
    let mut b = Bare::default();
    b.visit_template(t);
    b.0
}

#[test]
fn the_dockerfile_runs_the_cli_with_its_ports() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let instr: Vec<(String, String)> = text
        .replace("\\\n", " ")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
            (k.to_ascii_uppercase(), v.trim().to_string())
        })
        .collect();
    let stages: Vec<&String> = instr.iter().filter(|(k, _)| k == "FROM").map(|(_, v)| v).collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let last = instr.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let final_stage = &instr[last..];
    let get = |k: &str| final_stage.iter().filter(|(kk, _)| kk == k).map(|(_, v)| v.clone()).collect::<Vec<_>>();
    // The binary the cli crate builds.
    let cargo: toml::Value = toml::from_str(&std::fs::read_to_string(root().join("cli/Cargo.toml")).unwrap()).unwrap();
    let bin = cargo["bin"][0]["name"].as_str().unwrap();
    let entry = get("ENTRYPOINT").join(" ");
    assert!(entry.contains(&format!("/usr/local/bin/{bin}\"")), "ENTRYPOINT runs {bin}: {entry}");
    assert!(
        final_stage.iter().any(|(k, v)| k == "COPY"
            && v.contains("--from=")
            && v.contains(&format!("/{bin} "))
            && v.ends_with(&format!("/usr/local/bin/{bin}"))),
        "the final stage copies the built {bin} binary"
    );
    // Non-root, and no build tools in the final image.
    let user = get("USER").pop().expect("a USER in the final stage");
    assert!(user != "root" && user != "0" && !user.starts_with("0:"), "runs as {user}");
    let final_text: String = final_stage.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    for tool in ["cargo", "rustc", "gcc", "build-essential", "rustup"] {
        assert!(!final_text.contains(tool), "the final stage mentions {tool}");
    }
    // The ports the configurations default to (edge HTTP, core QUIC over UDP, core ops).
    let edge = chorus_edge::EdgeConfig::default();
    let core = chorus_core::CoreConfig::default();
    let exposed = get("EXPOSE").join(" ");
    for want in [
        format!("{}/tcp", edge.listen.port()),
        format!("{}/udp", core.listen.port()),
        format!("{}/tcp", core.http.port()),
    ] {
        assert!(exposed.split_whitespace().any(|p| p == want), "EXPOSE {want}: {exposed}");
    }
    // The start-up scripts run this image with the subcommands the CLI has.
    for (name, sub) in [("core.sh.tftpl", "core --config"), ("edge.sh.tftpl", "edge --config")] {
        let t = std::fs::read_to_string(root().join("terraform/modules/region/templates").join(name)).unwrap();
        assert!(t.contains(&format!("${{image}} --log-format json {sub}")), "{name} runs `{sub}`");
    }
    let _ = RegionFile::load(&root().join("regions/global.toml")).unwrap();
}
