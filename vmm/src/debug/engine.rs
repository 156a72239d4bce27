//! Which engine carries a host breakpoint or watch: a debug-register slot or page protection.

use serde::Serialize;

/// The engine that carries a watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// A hardware debug-register slot.
    Hw,
    /// Page protection (read-only or absent memslots).
    Page,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Hw => "hw",
            Engine::Page => "page",
        })
    }
}

/// The engine as the wire types name it.
impl From<Engine> for drvisor_api::rest::Engine {
    fn from(engine: Engine) -> Self {
        match engine {
            Engine::Hw => drvisor_api::rest::Engine::Hw,
            Engine::Page => drvisor_api::rest::Engine::Page,
        }
    }
}
