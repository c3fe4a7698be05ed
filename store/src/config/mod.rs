//! The `services` section of `qpoint.yaml` (version 2): event and object stores.
//!
//! Each store kind is one module owning its config struct, checks, summary and
//! start ([`crate::stdout`], [`crate::pulse`], [`crate::s3::config`]). This module
//! holds what they share — entry parsing ([`entry`]), secrets ([`secret`]) — and
//! the registry below: adding a store kind is one module plus one line there.

pub mod entry;
pub mod secret;

use std::sync::Arc;

pub use entry::{At, EntryError, KeyPart, KindError, Problem, RawStore, StoreKind};
pub use secret::{Secret, SecretError, SecretSource};

pub use crate::pulse::PulseConfig;
pub use crate::s3::config::{
    DEFAULT_CONCURRENCY, DEFAULT_MULTIPART_BYTES, DEFAULT_SPOOL_MAX_BYTES, MIN_PART_BYTES,
    S3Config, ServerSideEncryption, StartupCheck,
};
pub use crate::stdout::StdoutConfig;

use crate::stores::{StartContext, StoreStartError};
use crate::{EventStore, ObjectStore};

/// A store kind that receives events.
pub trait EventKind: StoreKind {
    /// Starts the store.
    fn start(&self, ctx: &mut StartContext) -> Result<Arc<dyn EventStore>, StoreStartError>;
}

/// A store kind that receives objects.
pub trait ObjectKind: StoreKind {
    /// Starts the store.
    fn start(&self, ctx: &mut StartContext) -> Result<Arc<dyn ObjectStore>, StoreStartError>;
}

/// Declares a store list's config enum (one variant per kind) and its dispatch.
macro_rules! registry {
    (
        $(#[$meta:meta])*
        $name:ident: $kind_trait:ident -> $store:ident {
            $($variant:ident($config:ty),)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub enum $name {
            $(
                #[doc = concat!("`type: ", stringify!($variant), "`")]
                $variant($config),
            )+
        }

        impl $name {
            /// The `type` names, in registry order.
            pub const KINDS: &[&str] = &[$(<$config as StoreKind>::NAME),+];

            /// Every key any kind accepts, `id` and `type` first, in registry order.
            pub fn keys() -> Vec<&'static str> {
                let mut keys = vec!["id", "type"];
                $(
                    for key in entry::fields::<$config>() {
                        if !keys.contains(key) && !<$config as StoreKind>::ALIASES.contains(key) {
                            keys.push(key);
                        }
                    }
                )+
                keys
            }

            /// Builds the config of the kind `raw.kind` names, checking its keys.
            pub fn from_raw(raw: RawStore) -> Result<Self, EntryError> {
                $(
                    if raw.kind == <$config as StoreKind>::NAME {
                        return raw.parse::<$config>(&Self::keys()).map(Self::$variant);
                    }
                )+
                Err(raw.unknown_type(Self::KINDS))
            }

            /// The store's id.
            pub fn id(&self) -> &str {
                match self {
                    $(Self::$variant(c) => c.id(),)+
                }
            }

            /// The store's `type`.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => <$config as StoreKind>::NAME,)+
                }
            }

            /// The store's settings for `check-config`, secrets masked.
            pub fn summary(&self) -> String {
                match self {
                    $(Self::$variant(c) => c.summary(),)+
                }
            }

            /// The credentials the store reads at start, with the key holding each.
            pub fn secrets(&self) -> Vec<(&'static str, &Secret)> {
                match self {
                    $(Self::$variant(c) => c.secrets(),)+
                }
            }

            /// Starts the store.
            pub fn start(
                &self,
                ctx: &mut StartContext,
            ) -> Result<Arc<dyn $store>, StoreStartError> {
                match self {
                    $(Self::$variant(c) => <$config as $kind_trait>::start(c, ctx),)+
                }
            }
        }
    };
}

registry! {
    /// A validated `services.event_stores[]` entry.
    EventStoreConfig: EventKind -> EventStore {
        Stdout(StdoutConfig),
        Pulse(PulseConfig),
    }
}

registry! {
    /// A validated `services.object_stores[]` entry.
    #[expect(
        clippy::large_enum_variant,
        reason = "built once at start-up, never moved in bulk"
    )]
    ObjectStoreConfig: ObjectKind -> ObjectStore {
        Stdout(StdoutConfig),
        S3(S3Config),
    }
}
