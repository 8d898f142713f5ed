// gateway patch (PATCHED.md, "Header names inserted without a parse or a copy"): the whole
// file is new.

use crate::{CaseHeaderName, IntoCaseHeaderName};
use http::header::HeaderName;

/// A parsed name and the case to write it in, both used as they are: neither is parsed nor
/// copied (cloning a `from_static` name or an already shared one only counts a reference).
/// The case must spell the same name, ignoring ASCII case.
impl IntoCaseHeaderName for (HeaderName, CaseHeaderName) {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.1
    }

    fn into_names(self) -> Option<(HeaderName, CaseHeaderName)> {
        debug_assert!(self.1.as_slice().eq_ignore_ascii_case(self.0.as_str().as_bytes()));
        Some(self)
    }
}

/// As for `(HeaderName, CaseHeaderName)`, from references (both cloned).
impl IntoCaseHeaderName for (&HeaderName, &CaseHeaderName) {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.1.clone()
    }

    fn into_names(self) -> Option<(HeaderName, CaseHeaderName)> {
        (self.0.clone(), self.1.clone()).into_names()
    }
}
// gateway patch end
