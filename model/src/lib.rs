//! The data model of isolab: the pipeline format, its validation, trial planning and the
//! results contract.
//!
//! Data flows one way: [`load`] reads and validates a pipeline file into a [`Pipeline`],
//! [`plan::plan`] expands it into [`plan::Trial`]s with stable, content-derived ids, agents run
//! them and report [`sample::Sample`]s, and [`results`] fixes the Arrow schema of the Parquet
//! files that data scientists read.
//!
//! ```
//! let text = "apiVersion: isolab/v1\nkind: Pipeline\nname: demo\nplatforms:\n  native: { backend: native }\nexperiments:\n  - { name: micro, analysis: overhead, platforms: [native], workloads: [syscall] }\n";
//! let pipeline = isolab_model::load_str("demo.yaml", text).expect("valid");
//! let trials = isolab_model::plan::plan(&pipeline);
//! assert_eq!(trials.len(), 3); // default repetitions
//! ```

pub mod catalog;
pub mod error;
pub mod load;
pub mod location;
pub mod manifest;
pub mod pipeline;
pub mod plan;
pub mod procstat;
pub mod resolve;
#[cfg(feature = "arrow")]
pub mod results;
pub mod sample;
pub mod schema;
mod suggest;
pub mod units;
pub mod validate;
pub mod yaml;

pub use error::{Diagnostic, LoadError};
pub use load::{
    Loaded, load_file, load_file_full, load_file_profile, load_str, load_str_full,
    load_str_profile, load_with_overrides,
};
pub use pipeline::Pipeline;
pub use schema::json_schema;
