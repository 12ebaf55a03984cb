//! What the runtime compiles: core modules (the `wasm` type) and components
//! (`wasm-wasi-component`), behind one trait so that loading a file, the in-memory cache
//! and the artifact cache on disk treat both alike.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::artifact_cache::{ArtifactKind, Verified};

/// Compiled code of either kind, as the in-memory cache holds it.
#[derive(Clone)]
pub enum Code {
    Module(wasmtime::Module),
    Component(Component),
}

pub trait Compiled: Clone + Send + 'static {
    const KIND: ArtifactKind;
    /// What the log and errors call it.
    const NOUN: &'static str;

    fn compile(engine: &Engine, bytes: &[u8]) -> anyhow::Result<Self>;
    fn serialize(&self) -> anyhow::Result<Vec<u8>>;
    fn deserialize(verified: Verified, engine: &Engine) -> anyhow::Result<Self>;
    fn into_code(self) -> Code;
    fn from_code(code: &Code) -> Option<Self>;
}

impl Compiled for wasmtime::Module {
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

    fn from_code(code: &Code) -> Option<Self> {
        match code {
            Code::Module(module) => Some(module.clone()),
            Code::Component(_) => None,
        }
    }
}

impl Compiled for Component {
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

    fn from_code(code: &Code) -> Option<Self> {
        match code {
            Code::Component(component) => Some(component.clone()),
            Code::Module(_) => None,
        }
    }
}
