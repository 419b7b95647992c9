//! Erlang terms as the node stores them: interned atoms, compact values, records, term order,
//! and conversion to and from the `eetf` terms the wire uses.

mod atom;
mod convert;
mod order;
mod pid;
mod record;
mod text;
mod value;

pub use atom::{Atom, AtomTableFull, MAX_ATOMS, atoms};
pub use convert::{from_term, int_term, to_term};
pub use order::{cmp_exact, cmp_term, eq_term};
pub use pid::{Pid, Ref};
pub use record::{Record, RecordError, Shape};
pub use text::parse_term;
pub use value::{INLINE_BIN, Value};
