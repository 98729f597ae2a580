//! placeholder
use proc_macro::TokenStream;
/// placeholder
#[proc_macro_attribute]
pub fn redis_cached(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
