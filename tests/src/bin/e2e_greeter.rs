// The README's plugin binary, as plugins/cjm-greeter builds it.
include!("../../../plugins/cjm-greeter/src/main.rs");
