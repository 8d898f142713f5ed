// gateway patch (PATCHED.md, "Header names inserted without a parse or a copy"): the whole
// file is new.

use crate::{CaseHeaderName, IntoCaseHeaderName};
use http::header::{HeaderName, InvalidHeaderName};

/// A parsed name and the case to write it in, both used as they are: neither is parsed nor
/// copied (cloning a `from_static` name or an already shared one only counts a reference).
/// When the case does not spell the same name (ignoring ASCII case), the case decides, as for
/// any other name: it is parsed, and an invalid one is refused. So the name written on the
/// wire is always the one the header maps file it under.
impl IntoCaseHeaderName for (HeaderName, CaseHeaderName) {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.1
    }

    fn into_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName> {
        if self.1.as_slice().eq_ignore_ascii_case(self.0.as_str().as_bytes()) {
            return Ok(self);
        }
        let name = HeaderName::from_bytes(self.1.as_slice())?;
        Ok((name, self.1))
    }
}

/// As for `(HeaderName, CaseHeaderName)`, from references (both cloned).
impl IntoCaseHeaderName for (&HeaderName, &CaseHeaderName) {
    fn into_case_header_name(self) -> CaseHeaderName {
        self.1.clone()
    }

    fn into_names(self) -> Result<(HeaderName, CaseHeaderName), InvalidHeaderName> {
        (self.0.clone(), self.1.clone()).into_names()
    }
}
// gateway patch end
