"""The values each route of the team server carries (docs/server.md §2), for the codec's registry.

One row per operation: its name (``noun.operation``, a route ``POST /v1/noun/operation``), the
request value and the response value. ``codec.REGISTRY`` registers each as ``name`` and
``name.response`` when it is first imported, so that every value is compiled (and a field
of a type the codec does not know is a ``TypeError``) before any request is decoded. A route
of the server (``vault/server/handlers.py``) must be an operation of this table.

The checkout noun: ``reveal``/``checkout`` (``CheckoutRequest``; through the server it carries
the keyholder's sealed details), ``checkin``/``break_checkout``, ``list``, and ``context``
(the read a keyholder builds a client's key context on; a keyholder's read, not a noun method:
``permissions.KEYHOLDER_REQUESTS``), and ``answer_refused`` (the keyholder says it refused
an answer after its event was committed). The engineer noun: ``whoami``.

The reads that take a request value and answer a value, with no seal and no event
(``vault/server/read_routes.py``): ``grants.list``, ``reports.status``/``stale``,
``policies.get``/``unsigned``, ``purge.preview``/``receipts``,
``keys.list``/``versions``, ``audit.log``/``export`` (one page per request, the page request
carrying the stream's cursor) and ``audit.head``; ``checkouts.list`` above; ``audit.points``/
``chain`` (the whole chain for an admin's ``audit verify``: ``server/chain_routes.py``). ``engineers.list``
appends its ``engineer-list`` event on the server (format 3: ``listing_routes.py``). An
enrolment (``enroll_draft``: the open invitation; ``enroll``: the keys made for it) is
authenticated by the enrolment code instead of a certified key (``server/enrolment_routes.py``).

The secrets' writes (``secret_draft_requests.py``): ``add_draft``/``update_draft`` answer a
``SecretDraft``, ``add``/``update`` commit the keyholder's version and answer ``SecretRows``.
The engineer's everyday reads, each on record as a format-3 event before it answers
(``server/secret_read_routes.py``, ``server/client_routes.py``): ``secrets.show``/``history``
(``SecretRows``), ``secrets.list`` (``SecretListing``: its pages in one answer; kept for older
clients), ``secrets.list_page`` (``SecretListPage``: one bounded page after a cursor),
``clients.show``/``list`` (``ClientRows``).
"""

from __future__ import annotations

from vault.authority import access_report_values as ar
from vault.authority import audit_requests as a
from vault.authority import audit_signers as au
from vault.authority import audit_verify_requests as av
from vault.authority import backup_requests as bk
from vault.authority import checkout_context as c
from vault.authority import client_add_values as ca
from vault.authority import client_requests as cl
from vault.authority import confirm_requests as cf
from vault.authority import engineer_requests as e
from vault.authority import grant_draft_requests as gd
from vault.authority import grant_requests as g
from vault.authority import grant_sweep_values as gs
from vault.authority import invite_draft_values as iv
from vault.authority import local_requests as lr
from vault.authority import passphrase_requests as pp
from vault.authority import policy_draft_values as pd
from vault.authority import policy_requests as p
from vault.authority import purge_draft_values as pud
from vault.authority import purge_requests as pu
from vault.authority import purge_secret_values as ps
from vault.authority import purge_subject_values as pj
from vault.authority import purge_vacuum as pv
from vault.authority import rekey_draft_values as rk
from vault.authority import removal_draft_values as rm
from vault.authority import report_requests as r
from vault.authority import requests as v
from vault.authority import root_draft_values as rd
from vault.authority import root_rotation_requests as rr
from vault.authority import rotation_draft_values as kd
from vault.authority import rotation_reads as k
from vault.authority import rotation_requests as kr
from vault.authority import secret_draft_requests as sd
from vault.authority import secret_requests as sr
from vault.authority import settings_requests as st

ROUTES: tuple[tuple[str, type, type], ...] = (
    ("checkouts.reveal", v.CheckoutRequest, v.CheckoutResponse),
    ("checkouts.checkout", v.CheckoutRequest, v.CheckoutResponse),
    ("checkouts.checkin", v.ReleaseRequest, v.ReleaseResponse),
    ("checkouts.break_checkout", v.ReleaseRequest, v.ReleaseResponse),
    ("checkouts.list", v.ListRequest, v.ListResponse),
    ("checkouts.context", c.ContextRequest, c.ContextResponse),
    ("checkouts.answer_refused", v.AnswerRefusedRequest, v.AnswerRefusedResponse),
    ("audit.answer_refused", v.RefusedAnswerRequest, v.AnswerRefusedResponse),  # any answer refused
    ("engineers.whoami", e.WhoamiRequest, e.WhoamiAnswer),
    ("local.record", lr.LocalRecord, lr.LocalRecord),  # kept in events only: no server serves it
    ("engineers.list", e.ListRequest, e.EngineerAnswer),
    ("engineers.enroll_draft", e.EnrollRequest, e.EnrolmentDraft),  # invite-authenticated (enrolment_routes.py)
    ("engineers.enroll", e.EnrollCommit, e.EngineerAnswer),
    ("engineers.pending_confirmation", e.ConfirmRequest, e.EngineerAnswer),  # PENDING: the rows to certify
    ("engineers.confirm", cf.ConfirmCommit, e.EngineerAnswer),
    ("grants.list", g.GrantListRequest, g.GrantListRows),
    ("reports.status", r.ReportRequest, r.ReportRows),
    ("reports.stale", r.ReportRequest, r.ReportRows),
    ("reports.access", ar.AccessReportRequest, ar.AccessAnswer),  # server/access_routes.py
    ("keys.list", kr.ListRequest, k.RotationList),
    ("keys.versions", kr.VersionsRequest, k.KeyVersionList),
    ("audit.log", a.PageRequest, a.EventPage),
    ("audit.export", a.PageRequest, a.EventPage),
    ("audit.head", a.HeadRequest, a.HeadAnswer),
    ("policies.get", p.PolicyRequest, p.PolicyRows),
    ("policies.unsigned", p.PolicyRequest, p.PolicyRows),
    ("purge.preview", pu.PurgeRequest, pu.PurgeRows),
    ("purge.receipts", pu.ReceiptRequest, pu.ReceiptRows),
    ("secrets.add_draft", sd.AddDraftRequest, sd.SecretDraft),
    ("secrets.add", sd.AddCommit, sr.SecretRows),
    ("secrets.update_draft", sd.UpdateDraftRequest, sd.SecretDraft),
    ("secrets.update", sd.UpdateCommit, sr.SecretRows),
    ("secrets.show", sr.ReadRequest, sr.SecretRows),
    ("secrets.history", sr.ReadRequest, sr.SecretRows),
    ("secrets.list", sr.ListSecretsRequest, sr.SecretListing),
    ("secrets.list_page", sr.SecretPageRequest, sr.SecretListPage),  # one bounded page, its own event
    ("clients.show", cl.ShowRequest, cl.ClientRows),
    ("clients.list", cl.ListRequest, cl.ClientRows),
    # an admin's grant and revoke: drafts and signed commits (grant_draft_requests.py, server/grant_routes.py)
    ("grants.grant_draft", gd.GrantDraftRequest, gd.GrantDraft),
    ("grants.grant", gd.GrantCommit, g.GrantRows),
    ("grants.revoke_draft", gd.RevokeDraftRequest, gd.GrantDraft),
    ("grants.revoke", gd.RevokeCommit, g.GrantRows),
    ("engineers.root_seal", gd.RootSealRequest, gd.RootSealAnswer),
    ("clients.add_draft", cl.AddRequest, ca.ClientDraft),  # a new client: its id reserved (client_add_drafts.py)
    ("clients.add", ca.ClientCommit, cl.AddAnswer),
    # an engineer's passphrase change: their stored key record read, then the re-locked one committed
    ("engineers.passphrase_draft", e.PassphraseRequest, e.KeyRecordDraft),
    ("engineers.change_passphrase", pp.PassphraseCommit, e.EngineerAnswer),
    # the rows an engineer's machine checks the audit log's signatures under (authority/audit_signers.py)
    ("audit.signers", au.SignersRequest, au.SignerRows),
    # the whole chain for an admin's `audit verify` off the database (server/chain_routes.py)
    ("audit.points", av.PointsRequest, av.ChainPoints),
    ("audit.chain", a.PageRequest, a.EventPage),
    # an admin's policy change: a draft and a signed commit (policy_draft_values.py, server/policy_routes.py)
    ("policies.set_draft", pd.PolicySetDraftRequest, pd.PolicyDraft),
    ("policies.set", pd.PolicyCommit, p.PolicyRows),
    # an admin's client purge: a draft (its receipt id reserved) and a signed commit; a receipt's check
    ("purge.client_draft", pud.PurgeClientDraftRequest, pud.PurgeDraft),
    ("purge.client", pud.PurgeClientCommit, pu.PurgeRows),
    ("purge.verify_receipt", pu.ReceiptRequest, pu.ReceiptRows),
    # an admin's purge of one secret: a draft on record (its data keys released), a signed commit
    ("purge.secret_draft", ps.PurgeSecretDraftRequest, ps.PurgeSecretDraft),
    ("purge.secret", ps.PurgeSecretCommit, pu.PurgeRows),
    # an admin's purge of a data subject: search pages on record (their data keys released), per client
    # a draft (its receipt id reserved) and a signed commit (authority/purge_subject_drafts.py)
    ("purge.subject_search", pj.SubjectSearchRequest, pj.SubjectPage),
    ("purge.subject_draft", pj.PurgeSubjectDraftRequest, pj.PurgeSubjectDraft),
    ("purge.subject", pj.PurgeSubjectCommit, pu.PurgeRows),
    # an admin's invitation: a draft (a new engineer's id reserved) and a signed commit (server/invite_routes.py)
    ("engineers.invite_draft", e.InviteRequest, iv.InviteDraft),
    ("engineers.invite", iv.InviteCommit, e.EngineerAnswer),
    # an admin's client-key rotation: drafts and commits (rotation_draft_values.py, server/rotation_routes.py)
    ("keys.start_draft", kr.StartRequest, kd.StartDrafted),
    ("keys.start", kd.StartCommit, kr.Started),
    ("keys.open", kr.OpenRequest, kr.RotationBasis),
    ("keys.rewrap_draft", kr.BatchRequest, kd.BatchDrafted),
    ("keys.rewrap", kd.BatchCommit, kr.BatchDone),
    ("keys.finish", kr.FinishRequest, kr.Finished),
    # an admin's sweep of expired grants: a draft and a signed commit (grant_sweep_drafts.py, server/sweep_routes.py)
    ("grants.sweep_draft", g.SweepRequest, gs.SweepDrafted),
    ("grants.sweep", gs.SweepCommit, g.SweepRows),
    # the vault settings: read (the row an admin's change is signed over) and an admin's signed change
    ("settings.get", st.SettingsRequest, st.SettingsRows),
    ("settings.set", st.SettingsRequest, st.SettingsRows),
    # an admin's re-key of an engineer (a lost laptop): a draft and a signed commit (server/engineer_write_routes.py)
    ("engineers.rotate_draft", e.RotateRequest, rk.RekeyDraftAnswer),
    ("engineers.rotate", rk.RekeyCommit, e.EngineerAnswer),
    # an admin's removal of an engineer: a draft (every client's start shown) and a signed commit
    ("engineers.remove_draft", e.RemoveRequest, rm.RemovalDraftAnswer),
    ("engineers.remove_root_draft", rm.RemovalCommit, rm.RemovalRootDraft),  # an admin's removal's root
    ("engineers.remove", rm.RemovalCommit, e.RemovalAnswer),
    # an admin's root rotation: a draft, its pages of clients, one signed commit (server/root_routes.py)
    ("keys.root_draft", rr.RootRotateRequest, rd.RootDrafted),
    ("keys.root_page", rd.RootPageRequest, rd.RootPageDrafted),
    ("keys.rotate_root", rd.RootCommit, rr.RootRotated),
    # an admin's backup (server/backup_routes.py): the backup keys' context, then the event and the rows;
    # ``backups.create`` answers a stream of lines (``STREAMED``, wire/backupstream.py), not an envelope
    ("backups.context", bk.BackupRequest, bk.BackupContext),
    ("backups.create", bk.BackupCommit, bk.BackupRecorded),
    # ``--vacuum`` on a purge: run on the server's host once the purge committed (authority/purge_vacuum.py)
    ("purge.vacuum", pv.VacuumRequest, pv.VacuumDone),
)
# Routes whose answer is ``application/x-ndjson`` lines (their registered response names what the
# header line says); the end line carries the server's own signature (wire/backupstream.py).
STREAMED = frozenset({"backups.create"})
