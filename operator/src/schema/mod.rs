//! What the CRDs carry besides the types' schema: the `Webhook` CRD's CEL validation rules
//! (`rules`) and the API reference generated from the schema (`reference`). Pure.

pub mod reference;
pub mod rules;
