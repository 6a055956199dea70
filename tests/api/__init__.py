"""The API: resources and the request edge, in-process and as real processes."""
