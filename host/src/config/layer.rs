//! How one declaration of a section's keys becomes its configuration struct,
//! its defaults, and a layer read from `kiln.toml`, the `KILN_<SECTION>_<KEY>`
//! environment or `--set SECTION.KEY=VALUE` flags (see `sections!`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::DeserializeOwned;

use super::{ConfigError, Secret};

/// A configuration value: what a layer may give for it, how that replaces
/// the value below, and how it is read from text (environment, flags).
pub(super) trait Setting {
    type Given: DeserializeOwned;
    fn apply(&mut self, given: Option<Self::Given>);
    fn parse(raw: &str) -> Result<Self::Given, String>;
}

macro_rules! parsed_setting {
    ($($t:ty),*) => {$(
        impl Setting for $t {
            type Given = $t;
            fn apply(&mut self, given: Option<$t>) {
                if let Some(given) = given {
                    *self = given;
                }
            }
            fn parse(raw: &str) -> Result<$t, String> {
                raw.trim().parse().map_err(|e: <$t as FromStr>::Err| e.to_string())
            }
        }
    )*};
}

parsed_setting!(
    u32,
    u64,
    usize,
    bool,
    SocketAddr,
    super::LogFormat,
    super::ForwardedHeader
);

/// Paths and secrets are taken as written, spaces and all.
macro_rules! verbatim_setting {
    ($($t:ty => $make:expr),*) => {$(
        impl Setting for $t {
            type Given = $t;
            fn apply(&mut self, given: Option<$t>) {
                if let Some(given) = given {
                    *self = given;
                }
            }
            fn parse(raw: &str) -> Result<$t, String> {
                Ok($make(raw))
            }
        }
    )*};
}

verbatim_setting!(PathBuf => PathBuf::from, Secret => |raw: &str| Secret(raw.to_owned()));

/// A list: an array in `kiln.toml`, comma-separated text in `KILN_*` and
/// `--set`.
impl Setting for Vec<String> {
    type Given = Vec<String>;
    fn apply(&mut self, given: Option<Vec<String>>) {
        if let Some(given) = given {
            *self = given;
        }
    }
    fn parse(raw: &str) -> Result<Vec<String>, String> {
        Ok(raw
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect())
    }
}

/// An optional value: a layer that gives one sets it.
impl<T: Setting<Given = T> + DeserializeOwned> Setting for Option<T> {
    type Given = T;
    fn apply(&mut self, given: Option<T>) {
        if given.is_some() {
            *self = given;
        }
    }
    fn parse(raw: &str) -> Result<T, String> {
        T::parse(raw)
    }
}

/// Values by section and key from text: the name a value goes by (for
/// errors) and the text, or `None` when the source has none.
pub(super) struct Named<F: Fn(&str, &str) -> Option<(String, String)>>(pub F);

impl<F: Fn(&str, &str) -> Option<(String, String)>> Named<F> {
    pub(super) fn get<T: Setting>(
        &self,
        section: &str,
        key: &str,
    ) -> Result<Option<T::Given>, ConfigError> {
        let Some((name, value)) = (self.0)(section, key) else {
            return Ok(None);
        };
        T::parse(&value)
            .map(Some)
            .map_err(|reason| ConfigError::Value {
                name,
                value,
                reason,
            })
    }
}

/// Declares the configuration once. Each section becomes a struct of its
/// values with their defaults, a layer of optional values (deserialized
/// from `kiln.toml`, read by name from the environment or flags) and an
/// `apply` of that layer; `Config` and `Layer` gather the sections.
macro_rules! sections {
    ($(
        $(#[$section_meta:meta])*
        $section:ident: $Section:ident / $SectionLayer:ident {
            $( $(#[$meta:meta])* $key:ident: $ty:ty = $default:expr, )*
        }
    )*) => {
        $(
            $(#[$section_meta])*
            #[derive(Debug, Clone, PartialEq, Eq)]
            pub struct $Section {
                $( $(#[$meta])* pub $key: $ty, )*
            }

            impl Default for $Section {
                fn default() -> Self {
                    Self { $( $key: $default, )* }
                }
            }

            impl $Section {
                fn apply(&mut self, layer: $SectionLayer) {
                    $( $crate::config::layer::Setting::apply(&mut self.$key, layer.$key); )*
                }
            }

            #[derive(Debug, Default, serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct $SectionLayer {
                $( $key: Option<<$ty as $crate::config::layer::Setting>::Given>, )*
            }

            impl $SectionLayer {
                const KEYS: &[&str] = &[$(stringify!($key)),*];

                fn read<F: Fn(&str, &str) -> Option<(String, String)>>(
                    source: &$crate::config::layer::Named<F>,
                ) -> Result<Self, ConfigError> {
                    Ok(Self {
                        $( $key: source.get::<$ty>(stringify!($section), stringify!($key))?, )*
                    })
                }
            }
        )*

        /// The validated configuration of `kiln serve`.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Config {
            $( pub $section: $Section, )*
        }

        impl Config {
            fn apply(&mut self, layer: Layer) {
                $( self.$section.apply(layer.$section); )*
            }
        }

        /// One layer: every value optional, merged over the layers below it.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Layer {
            $( #[serde(default)] $section: $SectionLayer, )*
        }

        impl Layer {
            /// Every value `source` has, by section and key.
            fn read<F: Fn(&str, &str) -> Option<(String, String)>>(
                source: &$crate::config::layer::Named<F>,
            ) -> Result<Self, ConfigError> {
                Ok(Self { $( $section: $SectionLayer::read(source)?, )* })
            }

            /// Whether `section.key` is a declared key.
            fn declares(section: &str, key: &str) -> bool {
                match section {
                    $( stringify!($section) => $SectionLayer::KEYS.contains(&key), )*
                    _ => false,
                }
            }
        }
    };
}

pub(super) use sections;
