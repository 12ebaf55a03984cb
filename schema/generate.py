#!/usr/bin/env python3
"""Generates config.schema.json beside this script: the JSON Schema of Wharf's config.

The long address and pattern regexes are built here from small named parts; edit this file,
not the JSON, then run `python3 schema/generate.py`. `--check` exits non-zero if the
committed schema differs from what this script generates (scripts/test runs it).
"""
import json, os, sys

# ---- regular expression building blocks -------------------------------------------------
H = "[0-9A-Fa-f]{1,4}"
OCT = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
V4 = f"{OCT}(?:\\.{OCT}){{3}}"
_v6_alts = [
    f"(?:{H}:){{7}}{H}",
    f"(?:{H}:){{1,7}}:",
    f"(?:{H}:){{1,6}}:{H}",
    f"(?:{H}:){{1,5}}(?::{H}){{1,2}}",
    f"(?:{H}:){{1,4}}(?::{H}){{1,3}}",
    f"(?:{H}:){{1,3}}(?::{H}){{1,4}}",
    f"(?:{H}:){{1,2}}(?::{H}){{1,5}}",
    f"{H}:(?::{H}){{1,6}}",
    f":(?:(?::{H}){{1,7}}|:)",
    # with an embedded IPv4 tail
    f"(?:{H}:){{6}}{V4}",
    f"::(?:{H}:){{0,5}}{V4}",
    f"(?:{H}:){{1}}:(?:{H}:){{0,4}}{V4}",
    f"(?:{H}:){{2}}:(?:{H}:){{0,3}}{V4}",
    f"(?:{H}:){{3}}:(?:{H}:){{0,2}}{V4}",
    f"(?:{H}:){{4}}:(?:{H}:){{0,1}}{V4}",
    f"(?:{H}:){{5}}:{V4}",
]
V6 = "(?:" + "|".join(_v6_alts) + ")"
PORT = "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"   # 1-65535
PORT0 = "(?:0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"  # 0-65535
PORTS = f"{PORT0}(?:-{PORT0})?"
CIDR4 = "(?:3[0-2]|[12]?[0-9])"
CIDR6 = "(?:12[0-8]|1[01][0-9]|[1-9]?[0-9])"
V4SPEC = f"{V4}(?:-{V4}|/{CIDR4})?"
V6SPEC = f"{V6}(?:-{V6}|/{CIDR6})?"
UNIX_PATH = "unix:/[^\\x00]+"

LISTENER_ADDR = f"^(?:\\*:{PORT}|{V4}:{PORT}|\\[{V6}\\]:{PORT}|{UNIX_PATH})$"
PROXY = f"^http://(?:{V4}:{PORT}|\\[{V6}\\]:{PORT}|{UNIX_PATH})$"
ADDR_PATTERN = f"^!?(?:unix|\\*:{PORTS}|{V4SPEC}(?::{PORTS})?|{V6SPEC}|\\[{V6SPEC}\\]:{PORTS})$"
# a pass with variables ("$name") is resolved per request, so any text goes
PASS = "^(?:applications/[^/]+|routes(?:/[^/]+)?|upstreams/[^/]+|[^$]*\\$[\\s\\S]*)$"
UPSTREAM_SERVER = f"^(?:{V4}:{PORT}|\\[{V6}\\]:{PORT}|{UNIX_PATH})$"
# "*" wildcards, but never "**"; "~" (after an optional "!") starts a regular expression
PATTERN = "^(?:!?~[\\s\\S]*|(?:[^*]|\\*[^*])*\\*?)$"
PERCENT = "^(?:[^%]|%[0-9A-Fa-f]{2})*$"
TOKEN = "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
CONTENT_LENGTH = "^[Cc][Oo][Nn][Tt][Ee][Nn][Tt]-[Ll][Ee][Nn][Gg][Tt][Hh]$"
NO_CTL = "^[^\\x00-\\x08\\x0A-\\x1F\\x7F]*$"
NO_NUL = "^[^\\x00]*$"
TICKET_KEY = "^(?:[A-Za-z0-9+/]{64}|[A-Za-z0-9+/]{107}=?)$"
SCHEME = "^[Hh][Tt][Tt][Pp][Ss]?$"

I32_MAX = 2147483647
SECONDS_MAX = 2147483   # Unit's bound: seconds that still fit in i32 milliseconds

MSG_PATTERN = 'must not contain "**"; use a single "*" wildcard'
MSG_PERCENT = 'has an invalid percent-encoding; "%" must be followed by two hex digits'
MSG_ADDR = ('is not a valid address pattern; use an IP address, range or CIDR block with an optional '
            '":port" or port range, "*:port", or "unix"')
MSG_PASS = 'must be "applications/<name>", "routes", "routes/<name>" or "upstreams/<name>"'
MSG_ACTIONS = '"pass", "return", "share", "proxy" or "metrics"'

def ref(name):
    return {"$ref": f"#/$defs/{name}"}

defs = {}

# ---- root members ---------------------------------------------------------------------------
defs["listeners"] = {
    "description": "Listening sockets keyed by address.",
    "type": "object",
    "propertyNames": {
        "$comment": "\"*:port\", IPv4 \"a.b.c.d:port\", \"[ipv6]:port\" or \"unix:/absolute/path\"; port 1-65535 without leading zeros.",
        "pattern": LISTENER_ADDR,
        "errorMessage": 'is not a valid listener address; use "*:port", "ip:port", "[ipv6]:port" or "unix:/path"',
    },
    "additionalProperties": ref("listener"),
}
defs["listener"] = {
    "type": "object",
    "required": ["pass"],
    "additionalProperties": False,
    "properties": {
        "pass": ref("pass"),
        "tls": ref("tls"),
        "forwarded": ref("forwarded"),
        "backlog": {"type": "integer", "minimum": 1, "maximum": I32_MAX, "default": 511},
    },
    "errorMessage": {"type": 'must be an object with "pass"'},
}
defs["upstreams"] = {
    "description": "Groups of servers that requests are spread over by weighted round robin.",
    "type": "object",
    "additionalProperties": ref("upstream"),
}
defs["upstream"] = {
    "type": "object",
    "required": ["servers"],
    "additionalProperties": False,
    "properties": {
        "servers": {
            "type": "object",
            "propertyNames": {
                "pattern": UPSTREAM_SERVER,
                "errorMessage": 'is not a valid server address; use "ip:port", "[ipv6]:port" or "unix:/path"',
            },
            "additionalProperties": ref("upstreamServer"),
        },
    },
    "errorMessage": {"type": 'must be an object with "servers"'},
}
defs["upstreamServer"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "weight": {
            "type": "number",
            "minimum": 0,
            "maximum": 1000000,
            "default": 1,
            "errorMessage": "must be a number from 0 to 1000000",
        },
    },
}
defs["pass"] = {
    "description": "Where requests go; the name part is percent-decoded, and must exist (checked after the schema).",
    "type": "string",
    "pattern": PASS,
    "errorMessage": {"pattern": MSG_PASS},
}
defs["tls"] = {
    "type": "object",
    "required": ["certificate"],
    "additionalProperties": False,
    "properties": {
        "certificate": {
            "type": ["string", "array"],
            "minLength": 1,
            "minItems": 1,
            "items": {"type": "string", "minLength": 1},
            "errorMessage": {
                "type": "must be a certificate bundle name or an array of names",
                "minItems": "must name at least one certificate bundle",
            },
        },
        "conf_commands": {"type": "object", "additionalProperties": {"type": "string"}},
        "session": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cache_size": {"type": "integer", "minimum": 0},
                "timeout": {"type": "integer", "minimum": 1},
                "tickets": {
                    "type": ["boolean", "string", "array"],
                    "pattern": TICKET_KEY,
                    "items": {
                        "type": "string",
                        "pattern": TICKET_KEY,
                        "errorMessage": {"pattern": "must be a base64-encoded 48- or 80-byte key"},
                    },
                    "errorMessage": {
                        "type": "must be a boolean, a base64 key or an array of base64 keys",
                        "pattern": "must be a base64-encoded 48- or 80-byte key",
                    },
                },
            },
        },
    },
}
defs["forwarded"] = {
    "description": "Trusted proxy headers: \"client_ip\" and \"protocol\" name the header fields to read.",
    "type": "object",
    "required": ["source"],
    "additionalProperties": False,
    "properties": {
        "client_ip": ref("headerName"),
        "protocol": ref("headerName"),
        "source": ref("addressPatterns"),
        "recursive": {"type": "boolean"},
    },
    "anyOf": [{"required": ["client_ip"]}, {"required": ["protocol"]}],
    "errorMessage": {"anyOf": 'must set "client_ip", "protocol" or both'},
}
defs["headerName"] = {
    "type": "string",
    "pattern": TOKEN,
    "errorMessage": {"pattern": "must be an HTTP header field name"},
}

# ---- routes -----------------------------------------------------------------------------------
defs["routes"] = {
    "description": "An array of steps (pass \"routes\"), or named arrays of steps (pass \"routes/<name>\").",
    "type": ["array", "object"],
    "items": ref("step"),
    "additionalProperties": {
        "type": "array",
        "items": ref("step"),
        "errorMessage": {"type": "must be an array of route steps"},
    },
    "errorMessage": {"type": "must be an array of route steps or an object of named arrays of steps"},
}
defs["step"] = {
    "type": "object",
    "required": ["action"],
    "additionalProperties": False,
    "properties": {"match": ref("match"), "action": ref("action")},
    "errorMessage": {"type": 'must be an object with "action" and an optional "match"'},
}
defs["match"] = {
    "description": "Conditions, all of which must hold; an array of patterns holds if any pattern matches.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "uri": ref("encodedPatterns"),
        "method": ref("patterns"),
        "host": ref("patterns"),
        "headers": ref("patternSets"),
        "arguments": ref("encodedPatternSets"),
        "cookies": ref("patternSets"),
        "query": ref("encodedPatterns"),
        "scheme": {
            "type": "string",
            "pattern": SCHEME,
            "errorMessage": 'must be "http" or "https"',
        },
        "source": ref("addressPatterns"),
        "destination": ref("addressPatterns"),
    },
}
defs["patterns"] = {
    "$comment": "A pattern: \"*\" wildcards (never \"**\"), a leading \"!\" negates, \"~\" (after an optional \"!\") starts a regular expression.",
    "type": ["string", "array"],
    "pattern": PATTERN,
    "items": ref("patternString"),
    "errorMessage": {
        "type": "must be a pattern string or an array of pattern strings",
        "pattern": MSG_PATTERN,
    },
}
defs["patternString"] = {
    "type": "string",
    "pattern": PATTERN,
    "errorMessage": {"pattern": MSG_PATTERN},
}
defs["encodedPatterns"] = {
    "$comment": "Like patterns, but matched against percent-decoded text, so the pattern itself must be validly percent-encoded.",
    "type": ["string", "array"],
    "pattern": PATTERN,
    "allOf": [ref("percentEncoded")],
    "items": ref("encodedPatternString"),
    "errorMessage": {
        "type": "must be a pattern string or an array of pattern strings",
        "pattern": MSG_PATTERN,
    },
}
defs["encodedPatternString"] = {
    "type": "string",
    "pattern": PATTERN,
    "allOf": [ref("percentEncoded")],
    "errorMessage": {"pattern": MSG_PATTERN},
}
defs["percentEncoded"] = {
    "pattern": PERCENT,
    "errorMessage": MSG_PERCENT,
}
defs["patternSets"] = {
    "description": "An object of name: patterns (all must match), or an array of such objects (any must match).",
    "type": ["object", "array"],
    "propertyNames": {"minLength": 1, "errorMessage": {"minLength": "must not be empty"}},
    "additionalProperties": ref("patterns"),
    "items": ref("patternSet"),
    "errorMessage": {"type": "must be an object of patterns or an array of such objects"},
}
defs["patternSet"] = {
    "type": "object",
    "propertyNames": {"minLength": 1, "errorMessage": {"minLength": "must not be empty"}},
    "additionalProperties": ref("patterns"),
    "errorMessage": {"type": "must be an object of patterns"},
}
defs["encodedPatternSets"] = {
    "type": ["object", "array"],
    "propertyNames": {"minLength": 1, "allOf": [ref("percentEncoded")], "errorMessage": {"minLength": "must not be empty"}},
    "additionalProperties": ref("encodedPatterns"),
    "items": ref("encodedPatternSet"),
    "errorMessage": {"type": "must be an object of patterns or an array of such objects"},
}
defs["encodedPatternSet"] = {
    "type": "object",
    "propertyNames": {"minLength": 1, "allOf": [ref("percentEncoded")], "errorMessage": {"minLength": "must not be empty"}},
    "additionalProperties": ref("encodedPatterns"),
    "errorMessage": {"type": "must be an object of patterns"},
}
defs["addressPatterns"] = {
    "$comment": "Unit's address patterns: optional \"!\", then \"unix\", \"*:ports\", an IPv4 address, range (a-b) or CIDR block with optional \":ports\", or the same for IPv6 (in brackets when a port follows); ports are a port or a range p-q (0-65535).",
    "type": ["string", "array"],
    "pattern": ADDR_PATTERN,
    "items": ref("addressPattern"),
    "errorMessage": {
        "type": "must be an address pattern or an array of address patterns",
        "pattern": MSG_ADDR,
    },
}
defs["addressPattern"] = {
    "type": "string",
    "pattern": ADDR_PATTERN,
    "errorMessage": {"pattern": MSG_ADDR},
}

only_with_share = ["index", "types", "fallback", "chroot", "follow_symlinks", "traverse_mounts"]
defs["action"] = {
    "description": f"Exactly one of {MSG_ACTIONS}, with the members that belong to it, plus optional \"rewrite\" and \"response_headers\".",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "pass": ref("pass"),
        "return": {
            "type": "integer",
            "minimum": 0,
            "maximum": 999,
            "errorMessage": "must be an HTTP status code from 0 to 999",
        },
        "location": {"type": "string"},
        "share": {
            "type": ["string", "array"],
            "minItems": 1,
            "items": {"type": "string"},
            "errorMessage": {
                "type": "must be a path or an array of paths",
                "minItems": "must list at least one path",
            },
        },
        "index": {"type": "string"},
        "types": ref("patterns"),
        "fallback": ref("action"),
        "chroot": {"type": "string"},
        "follow_symlinks": {"type": "boolean"},
        "traverse_mounts": {"type": "boolean"},
        "proxy": {
            "type": "string",
            "pattern": PROXY,
            "errorMessage": {
                "pattern": 'must be "http://<ipv4>:<port>", "http://[<ipv6>]:<port>" or "http://unix:/path"',
            },
        },
        "metrics": {
            "$comment": "Wharf's own: the metrics exposition, as the control socket's /metrics serves it.",
            "type": "boolean",
            "const": True,
            "errorMessage": "must be true",
        },
        "rewrite": {"type": "string"},
        "response_headers": {
            "type": "object",
            "propertyNames": {
                "pattern": TOKEN,
                "not": {"pattern": CONTENT_LENGTH},
                "errorMessage": {
                    "pattern": "is not a valid header field name",
                    "not": "cannot be set; Content-Length comes from the response body",
                },
            },
            "additionalProperties": {
                "type": ["string", "null"],
                "pattern": NO_CTL,
                "errorMessage": {
                    "type": "must be a string, or null to remove the header",
                    "pattern": "must not contain control characters",
                },
            },
        },
    },
    "allOf": [
        {
            "anyOf": [{"required": [a]} for a in ["pass", "return", "share", "proxy", "metrics"]],
            "errorMessage": f"must have one of {MSG_ACTIONS}",
        },
        {
            "$comment": "At most one action: each action rules out the ones after it, so two actions give one error.",
            "if": {"required": ["pass"]},
            "then": {"properties": {a: ref("conflictingAction") for a in ["return", "share", "proxy", "metrics"]}},
        },
        {
            "if": {"required": ["return"]},
            "then": {"properties": {a: ref("conflictingAction") for a in ["share", "proxy", "metrics"]}},
        },
        {
            "if": {"required": ["share"]},
            "then": {"properties": {a: ref("conflictingAction") for a in ["proxy", "metrics"]}},
        },
        {
            "if": {"required": ["proxy"]},
            "then": {"properties": {"metrics": ref("conflictingAction")}},
        },
        {
            "if": {"required": ["return"]},
            "else": {"properties": {"location": ref("onlyWithReturn")}},
        },
        {
            "if": {"required": ["share"]},
            "else": {"properties": {m: ref("onlyWithShare") for m in only_with_share}},
        },
    ],
}
defs["conflictingAction"] = {
    "not": {},
    "errorMessage": f"cannot be combined with another of {MSG_ACTIONS}",
}
defs["onlyWithReturn"] = {"not": {}, "errorMessage": 'is allowed only together with "return"'}
defs["onlyWithShare"] = {"not": {}, "errorMessage": 'is allowed only together with "share"'}

# ---- applications ---------------------------------------------------------------------------
defs["applications"] = {
    "type": "object",
    "additionalProperties": ref("application"),
}
defs["application"] = {
    "description": "An application; \"type\" picks the member list.",
    "type": "object",
    "required": ["type"],
    "properties": {"type": ref("applicationType")},
    "allOf": [
        {
            "if": {"required": ["type"], "properties": {"type": {"const": "wasm"}}},
            "then": ref("wasmApplication"),
        },
        {
            "if": {"required": ["type"], "properties": {"type": {"const": "wasm-wasi-component"}}},
            "then": ref("componentApplication"),
        },
    ],
}
defs["applicationType"] = {
    "enum": ["wasm", "wasm-wasi-component"],
    "errorMessage": 'is not supported; Wharf runs only "wasm" and "wasm-wasi-component" applications',
}

common_members = {
    "type": True,
    "processes": ref("processes"),
    "limits": ref("limits"),
    "environment": ref("environment"),
    "working_directory": ref("nonEmptyString"),
    "stdout": ref("nonEmptyString"),
    "stderr": ref("nonEmptyString"),
    "user": ref("nonEmptyString"),
    "group": ref("nonEmptyString"),
    "isolation": ref("isolation"),
}
wasm_handlers = ["request_handler", "malloc_handler", "free_handler"]
wasm_hooks = ["module_init_handler", "module_end_handler", "request_init_handler",
              "request_end_handler", "response_end_handler"]
defs["wasmApplication"] = {
    "description": "A module built with unit-wasm (Unit's \"wasm\" guest ABI).",
    "required": ["module"] + wasm_handlers,
    "additionalProperties": False,
    "properties": {
        **common_members,
        "module": ref("nonEmptyString"),
        **{h: ref("exportName") for h in wasm_handlers + wasm_hooks},
        "access": ref("access"),
        "watch": ref("watch"),
    },
}
defs["componentApplication"] = {
    "description": "A wasi:http/proxy component.",
    "required": ["component"],
    "additionalProperties": False,
    "properties": {
        **common_members,
        "component": ref("nonEmptyString"),
        "access": ref("access"),
        "watch": ref("watch"),
    },
}
defs["exportName"] = {"description": "The name of a function the module exports.", "type": "string", "minLength": 1}
defs["nonEmptyString"] = {"type": "string", "minLength": 1}
defs["watch"] = {"description": "Wharf extension: reload the application when its file changes.", "type": "boolean"}
defs["isolation"] = {"description": "Accepted for Unit compatibility; has no effect on Wasm applications.", "type": "object"}
defs["access"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "filesystem": {"type": "array", "items": ref("filesystemEntry")},
    },
}
defs["filesystemEntry"] = {
    "description": "A host directory the guest may use: an absolute path (same path inside the guest), or {host, guest, readonly} (Wharf extension).",
    "type": ["string", "object"],
    "pattern": "^/",
    "required": ["host", "guest"],
    "additionalProperties": False,
    "properties": {
        "host": ref("absolutePath"),
        "guest": ref("absolutePath"),
        "readonly": {"type": "boolean"},
    },
    "errorMessage": {
        "type": 'must be an absolute path or an object with "host" and "guest"',
        "pattern": "must be an absolute path",
    },
}
defs["absolutePath"] = {
    "type": "string",
    "pattern": "^/",
    "errorMessage": {"pattern": "must be an absolute path"},
}
defs["processes"] = {
    "description": "How many instances: a fixed number, or {max, spare, idle_timeout}.",
    "type": ["integer", "object"],
    "default": 1,
    "minimum": 1,
    "maximum": I32_MAX,
    "additionalProperties": False,
    "properties": {
        "max": {"type": "integer", "minimum": 1, "maximum": I32_MAX, "default": 1},
        "spare": {"type": "integer", "minimum": 0, "maximum": I32_MAX, "default": 0},
        "idle_timeout": {"type": "integer", "minimum": 0, "maximum": SECONDS_MAX, "default": 15},
    },
    "errorMessage": {
        "type": 'must be an integer of at least 1 or an object with "max", "spare" and "idle_timeout"',
    },
}
defs["limits"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "timeout": {
            "description": "Seconds a request may run in the guest.",
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": SECONDS_MAX,
        },
        "requests": {
            "description": "Requests an instance serves before it is replaced.",
            "type": "integer",
            "minimum": 1,
            "maximum": I32_MAX,
        },
        "memory": {
            "description": "Wharf extension: the most linear memory, in bytes, an instance may have.",
            "type": "integer",
            "minimum": 65536,
            "maximum": 4294967296,
            "default": 256 << 20,
        },
        "queue": {
            "description": "Wharf extension: requests that may wait for a busy app's instance; more get 503.",
            "type": "integer",
            "minimum": 0,
            "maximum": I32_MAX,
            "default": 1024,
        },
    },
}
defs["environment"] = {
    "type": "object",
    "propertyNames": {
        "minLength": 1,
        "pattern": "^[^=\\x00]*$",
        "errorMessage": {"minLength": "must not be empty", "pattern": 'must not contain "=" or NUL characters'},
    },
    "additionalProperties": {
        "type": "string",
        "pattern": NO_NUL,
        "errorMessage": {"pattern": "must not contain NUL characters"},
    },
}

# ---- settings, access_log -------------------------------------------------------------------
defs["settings"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "http": ref("httpSettings"),
        "js_module": {"type": ["string", "array"], "items": {"type": "string"}},
        "telemetry": ref("telemetry"),
        "acme": ref("acme"),
    },
}
defs["acme"] = {
    "description": "Wharf extension: certificate bundles obtained and renewed from an ACME (RFC 8555) directory, proving each name with HTTP-01 on Wharf's own listeners.",
    "type": "object",
    "additionalProperties": False,
    "required": ["directory", "certificates"],
    "properties": {
        "directory": {
            "description": "The directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory.",
            "type": "string",
            "pattern": "^[Hh][Tt][Tt][Pp][Ss]://[^/?#\\s]+(?:/[^\\s]*)?$",
            "errorMessage": {"type": "must be a URL", "pattern": "must be an https:// URL with a host"},
        },
        "contact": {
            "description": "The account's contact URIs (mailto:...), a string or an array.",
            "type": ["string", "array"],
            "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$",
            "items": {
                "type": "string",
                "pattern": "^[A-Za-z][A-Za-z0-9+.-]*:[^\\s]+$",
                "errorMessage": "must be a URI such as mailto:ops@example.com",
            },
            "errorMessage": {
                "type": "must be a URI or an array of URIs",
                "pattern": "must be a URI such as mailto:ops@example.com",
            },
        },
        "ca_certificate": {
            "description": "A PEM file with the root certificate the directory's HTTPS server is checked against, instead of the system's roots (a private CA, or a test server such as pebble).",
            "type": "string",
            "minLength": 1,
            "pattern": NO_NUL,
            "errorMessage": {"minLength": "must not be empty", "pattern": "must not contain NUL characters"},
        },
        "certificates": {
            "description": "The managed bundles: each name (as in /certificates and a listener's tls) and the names it is issued for.",
            "type": "object",
            "minProperties": 1,
            "propertyNames": {
                "minLength": 1,
                "pattern": "^[^/\\x00]+$",
                "errorMessage": {"minLength": "must not be empty", "pattern": 'must not contain "/" or NUL characters'},
            },
            "additionalProperties": ref("acmeCertificate"),
            "errorMessage": {"minProperties": "must name at least one bundle"},
        },
    },
    "errorMessage": {"type": 'must be an object with "directory" and "certificates"'},
}
defs["acmeCertificate"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["names"],
    "properties": {
        "names": {
            "description": "The DNS names the certificate is issued for; each must reach one of Wharf's plain listeners on port 80 (HTTP-01).",
            "type": "array",
            "minItems": 1,
            "maxItems": 100,
            "uniqueItems": True,
            "items": {
                "type": "string",
                "maxLength": 253,
                "pattern": "^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
                "errorMessage": {
                    "pattern": "must be a DNS name with at least one dot (wildcards need the DNS-01 challenge, which Wharf does not answer)",
                    "maxLength": "must be at most 253 characters",
                },
            },
            "errorMessage": {
                "minItems": "must list at least one name",
                "maxItems": "must list at most 100 names (the limit of public directories)",
                "uniqueItems": "must not list a name twice",
            },
        },
    },
    "errorMessage": {"type": 'must be an object with "names"'},
}
defs["telemetry"] = {
    "description": "Unit's OpenTelemetry tracing: a span per request, exported in batches over OTLP.",
    "type": "object",
    "additionalProperties": False,
    "required": ["endpoint", "protocol"],
    "properties": {
        "endpoint": {
            "description": "The collector's URL: for http the whole traces URL (http://host:4318/v1/traces), for grpc the server (http://host:4317).",
            "type": "string",
            "pattern": "^[Hh][Tt][Tt][Pp]://[^/?#\\s]+(?:/[^\\s]*)?$",
            "errorMessage": {
                "type": "must be a URL",
                "pattern": "must be an http:// URL with a host (https:// collectors are not supported yet)",
            },
        },
        "protocol": {
            "type": "string",
            "pattern": "^(?:[Hh][Tt][Tt][Pp]|[Gg][Rr][Pp][Cc])$",
            "errorMessage": 'must be "http" or "grpc"',
        },
        "batch_size": {
            "description": "Spans per export; a batch also leaves after a second.",
            "type": "integer", "minimum": 1, "maximum": 65536, "default": 128,
            "errorMessage": "must be an integer from 1 to 65536",
        },
        "sampling_ratio": {
            "description": "The share of traces that are recorded, by trace id, for requests that do not carry a sampling decision.",
            "type": "number", "minimum": 0, "maximum": 1, "default": 1,
            "errorMessage": "must be a number from 0 to 1",
        },
    },
}
defs["timeoutSeconds"] = {"type": "integer", "minimum": 1, "maximum": SECONDS_MAX}
defs["httpSettings"] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "header_read_timeout": {**ref("timeoutSeconds"), "default": 30},
        "body_read_timeout": {**ref("timeoutSeconds"), "default": 30},
        "body_total_timeout": {**ref("timeoutSeconds"), "default": 120,
                               "description": "Wharf: seconds a whole request body may take; past it, 408."},
        "send_timeout": {**ref("timeoutSeconds"), "default": 30},
        "idle_timeout": {**ref("timeoutSeconds"), "default": 180},
        "proxy_connect_timeout": {**ref("timeoutSeconds"), "default": 60,
                                  "description": "Wharf: seconds to wait for a connection to a proxied server; past it, 504."},
        "proxy_read_timeout": {**ref("timeoutSeconds"), "default": 30,
                               "description": "Wharf: seconds to wait for each read from a proxied server (its head, each piece of its body); past it, 504 or a cut connection."},
        "proxy_send_timeout": {**ref("timeoutSeconds"), "default": 30,
                               "description": "Wharf: seconds to wait for a proxied server to take request bytes; past it, 504 or a cut connection."},
        "max_body_size": {"description": "Bytes; a larger body gets 413.", "type": "integer", "minimum": 0,
                          "default": 8 * 1024 * 1024},
        "server_version": {"type": "boolean", "default": True},
        "log_route": {"type": "boolean", "default": False},
        "discard_unsafe_fields": {"type": "boolean", "default": True},
        "static": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mime_types": {
                    "type": "object",
                    "propertyNames": {"minLength": 1, "errorMessage": {"minLength": "must not be empty"}},
                    "additionalProperties": {
                        "type": ["string", "array"],
                        "minLength": 1,
                        "items": {"type": "string", "minLength": 1},
                        "errorMessage": {"type": "must be a file extension or an array of file extensions"},
                    },
                },
            },
        },
    },
}
defs["accessLog"] = {
    "type": ["string", "object"],
    "minLength": 1,
    "required": ["path"],
    "additionalProperties": False,
    "properties": {
        "path": ref("nonEmptyString"),
        "format": {"type": "string"},
        "if": {"type": "string"},
    },
    "errorMessage": {"type": 'must be a path or an object with "path" and optional "format" and "if"'},
}

schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Wharf configuration",
    "description": ("The whole configuration tree (GET /config), in NGINX Unit's shape. "
                    "\"errorMessage\" is a Wharf annotation: the message the control API reports when a "
                    "keyword of that node fails (a string for any keyword, or an object keyed by keyword)."),
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "listeners": ref("listeners"),
        "routes": ref("routes"),
        "applications": ref("applications"),
        "upstreams": ref("upstreams"),
        "settings": ref("settings"),
        "access_log": ref("accessLog"),
    },
    "errorMessage": {"type": "must be an object"},
    "$defs": defs,
}

text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.schema.json")
if sys.argv[1:] == ["--check"]:
    with open(out, encoding="utf-8") as f:
        if f.read() != text:
            sys.exit("schema/config.schema.json is stale: run python3 schema/generate.py")
else:
    with open(out, "w", encoding="utf-8") as f:
        f.write(text)
    print("wrote", out)
