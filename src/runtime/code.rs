//! What the runtime compiles, by three names: `Code` is compiled code of either kind
//! (a core module for the `wasm` type, a component for `wasm-wasi-component`);
//! `CodeFile` is a file as it was read and compiled; `CodeKind` is what loading a file,
//! the in-memory cache and the artifact cache on disk need of each kind, so that they
//! treat both alike.

use std::sync::Arc;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::artifact_cache::{ArtifactKind, Verified};
use super::{FileStamp, ModuleHash};

/// Compiled code of either kind.
#[derive(Clone)]
pub enum Code {
    Module(wasmtime::Module),
    Component(Component),
}

/// A module (or component) file as it was read and compiled. The code is shared with
/// every app that runs the same bytes, and leaves memory (with the descriptors of its
/// memory images) when the last of them lets go.
#[derive(Clone)]
pub struct CodeFile {
    pub hash: ModuleHash,
    pub code: Arc<Code>,
    /// The file's stamp taken before it was read: a write after that moves it on.
    pub stamp: Option<FileStamp>,
}

/// A kind of code: how it is compiled, stored in the artifact cache and loaded back.
pub trait CodeKind: Sized + Send + 'static {
    const KIND: ArtifactKind;
    /// What the log and errors call it.
    const NOUN: &'static str;

    fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Self>;
    fn serialize(&self) -> anyhow::Result<Vec<u8>>;
    fn deserialize(verified: Verified, engine: &Engine) -> anyhow::Result<Self>;
    fn into_code(self) -> Code;
}

impl CodeKind for wasmtime::Module {
    const KIND: ArtifactKind = ArtifactKind::Module;
    const NOUN: &'static str = "module";

    fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Self> {
        Self::new(engine, bytes).map_err(anyhow::Error::from)
    }

    fn serialize(&self) -> anyhow::Result<Vec<u8>> {
        wasmtime::Module::serialize(self).map_err(anyhow::Error::from)
    }

    fn deserialize(verified: Verified, engine: &Engine) -> anyhow::Result<Self> {
        verified.into_module(engine)
    }

    fn into_code(self) -> Code {
        Code::Module(self)
    }
}

impl CodeKind for Component {
    const KIND: ArtifactKind = ArtifactKind::Component;
    const NOUN: &'static str = "component";

    fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Self> {
        Self::new(engine, bytes).map_err(anyhow::Error::from)
    }

    fn serialize(&self) -> anyhow::Result<Vec<u8>> {
        Component::serialize(self).map_err(anyhow::Error::from)
    }

    fn deserialize(verified: Verified, engine: &Engine) -> anyhow::Result<Self> {
        verified.into_component(engine)
    }

    fn into_code(self) -> Code {
        Code::Component(self)
    }
}
