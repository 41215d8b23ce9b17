// Package desired parses and validates a desired.yaml into a plain value.
//
// Parsing is strict and reports every problem at once: unknown keys,
// duplicate keys, wrong types and bad values each become a *FieldError that
// names file:line:column and the field path. The package does no I/O beyond
// reading the file in Load, and never logs.
package desired
