"""Every constant label of the v1 format (docs/format.md §3).

A label is fixed per purpose and is always the first item of an associated-data or
signature context, so that a ciphertext or signature made for one purpose can never
be accepted for another.
"""

FORMAT_VERSION = 1

LABEL_SECRET_FIELD = b"credvault/v1/secret-field"
LABEL_DATA_KEY = b"credvault/v1/data-key"
LABEL_CLIENT_FIELD = b"credvault/v1/client-field"
LABEL_SEAL = b"credvault/v1/seal"
LABEL_KEY_RECORD = b"credvault/v1/key-record"
LABEL_ROOT_RECOVERY = b"credvault/v1/root/recovery-x25519"
LABEL_ROOT_LOOKUP = b"credvault/v1/root/lookup"
LABEL_TAG_CLIENT_SLUG = b"credvault/v1/tag/client-slug"
LABEL_TAG_SECRET_NAME = b"credvault/v1/tag/secret-name"
LABEL_SIG_ENGINEER = b"credvault/v1/sig/engineer-certificate"
LABEL_SIG_CLIENT_KEY = b"credvault/v1/sig/client-key-version"
LABEL_SIG_GRANT = b"credvault/v1/sig/grant"
LABEL_SIG_GRANT_REVOCATION = b"credvault/v1/sig/grant-revocation"
LABEL_SIG_GRANT_V3 = b"credvault/v3/sig/grant"  # a grant through the team server: binds its request id
LABEL_ENROLL_MAC = b"credvault/v1/enroll"
LABEL_FP_ENGINEER = b"credvault/v1/fingerprint/engineer"
LABEL_FP_CLIENT_KEY = b"credvault/v1/fingerprint/client-key"
LABEL_FP_ORG = b"credvault/v1/fingerprint/org"
LABEL_INVITE = b"credvault/v1/invite"
LABEL_ROOT_BUNDLE = b"credvault/v1/root-bundle"
LABEL_CLIENT_KEY_SEAL = b"credvault/v1/client-key"
LABEL_SHARE = b"credvault/v1/share"
LABEL_AUDIT_DETAIL = b"credvault/v1/audit-detail"
LABEL_AUDIT_EVENT = b"credvault/v1/audit-event"
LABEL_SIG_AUDIT = b"credvault/v1/sig/audit-event"
LABEL_SIG_CHECKPOINT = b"credvault/v1/sig/audit-checkpoint"
LABEL_SIG_ENGINEER_KEY = b"credvault/v1/sig/engineer-key"
LABEL_SIG_RECEIPT = b"credvault/v1/sig/purge-receipt"
LABEL_SIG_RECEIPT_V3 = b"credvault/v3/sig/purge-receipt"  # a receipt through the team server: binds its request id
LABEL_FP_DATA_KEY = b"credvault/v1/fingerprint/data-key"
LABEL_BACKUP_SECTION = b"credvault/v1/backup-section"
LABEL_BACKUP_KEYS = b"credvault/v1/backup-keys"
LABEL_BACKUP_VAULT_KEY = b"credvault/v1/backup-vault-key"
LABEL_BACKUP_SERVER_KEYS = b"credvault/v1/backup-server-keys"  # the server master keys in a key export
# The end line of a backup streamed by the team server (docs/format.md §11.1): its server key's
# signature over the vault, the request, the event, the line count and the digest of the lines.
LABEL_SIG_BACKUP_STREAM = b"credvault/v1/sig/backup-stream"
LABEL_SIG_POLICY = b"credvault/v1/sig/client-policy"
LABEL_SIG_SETTINGS = b"credvault/v1/sig/vault-settings"
LABEL_SIG_ORG_KEY = b"credvault/v1/sig/org-key"
LABEL_SIG_SHARE_POLICY = b"credvault/v1/sig/recovery-shares"
LABEL_SIG_INVITE = b"credvault/v1/sig/invite"
# Enrolment over HTTPS (docs/server.md §3): the key the enrolment code's secret derives, and
# its signature over the keys an enrolment request stores.
LABEL_INVITE_AUTH = b"credvault/v1/invite-auth"
LABEL_SIG_ENROLL_REQUEST = b"credvault/v1/sig/enroll-request"

# Blob types (docs/format.md §4): the second byte of every blob.
BLOB_SECRET_FIELD = 0x01
BLOB_DATA_KEY = 0x02
BLOB_CLIENT_FIELD = 0x03
BLOB_SEALED = 0x04
BLOB_KEY_RECORD = 0x05
BLOB_AUDIT_DETAIL = 0x06
BLOB_BACKUP_SECTION = 0x07

# Unlocked sessions kept in the OS keyring (docs/format.md, "Unlocked sessions").
LABEL_SESSION = b"credvault/v1/session"
# Audit events of format 2 (docs/format.md §8): hashed over ``chain.typed_ctx``, in which
# ``None``, ``""`` and ``b""`` (and an int and its bytes) encode differently. Events written
# before format 2 keep ``LABEL_AUDIT_EVENT`` and the plain ``ctx`` and still verify.
AUDIT_EVENT_FORMAT = 2
LABEL_AUDIT_EVENT_V2 = b"credvault/v2/audit-event"
# Audit events of format 3 (docs/format.md §8.2): appended by the team server, which signs each
# with its own key (certified by the organisation key, §5) over the event's hash; the event
# records the engineer's signed request.
LABEL_AUDIT_EVENT_V3 = b"credvault/v3/audit-event"
LABEL_SIG_AUDIT_SERVER = b"credvault/v1/sig/audit-event-server"
LABEL_SIG_SERVER_KEY = b"credvault/v1/sig/server-key"
# The details of a format-3 event, sealed by the keyholder before its request is sent: bound to
# the request's id (the event's number is not known yet), not to a sequence number.
LABEL_AUDIT_DETAIL_V3 = b"credvault/v3/audit-detail"

# The team server's layer over wrapped data keys (docs/format.md §4.8–4.9, docs/server.md §5):
# a server client key wrapped under the server master key, and a §4.2 wrapped data key
# wrapped once more under that server client key. Only vault/server/ uses them.
BLOB_SERVER_CLIENT_KEY = 0x08
BLOB_SERVER_LAYER = 0x09
LABEL_SERVER_CLIENT_KEY = b"credvault/v1/server-client-key"
LABEL_SERVER_LAYER = b"credvault/v1/server-layer"
