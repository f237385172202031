package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// AuditBreak is a place where the tenant's chain does not hold.
type AuditBreak struct {
	// Seq is the entry's position in the chain; EntryID is uuid.Nil when
	// the entry is missing.
	Seq     int64
	EntryID uuid.UUID
	Reason  string
}

// AuditVerification is what recomputing a tenant's chain found.
type AuditVerification struct {
	// Entries counts the entries checked; Head is the chain's last
	// position and CutSeq the last one retention removed.
	Entries, Head, CutSeq int64
	// Breaks are the broken links in chain order, at most the limit asked.
	Breaks []AuditBreak
}

// Intact reports whether every link held.
func (v AuditVerification) Intact() bool { return len(v.Breaks) == 0 }

// zeroHash is the previous hash of a chain's first entry.
var zeroHash = make([]byte, sha256.Size)

// auditLink is the hash an entry stores (see migration 0011).
func auditLink(prev []byte, e *AuditEntry) []byte {
	d := sha256.New()
	lp := func(s string) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		d.Write(n[:])
		d.Write([]byte(s))
	}
	actor := ""
	if e.ActorID != nil {
		actor = e.ActorID.String()
	}
	for _, s := range []string{e.ID.String(), e.TenantID.String(), e.ActorType, actor, e.ActorEmail, e.Action,
		e.ResourceType, e.ResourceID, e.Description, e.IPAddress, e.UserAgent, e.RequestID,
		string(e.OldValues), string(e.NewValues)} {
		lp(s)
	}
	h := sha256.New()
	h.Write(prev)
	var n [16]byte
	binary.BigEndian.PutUint64(n[:8], uint64(e.Seq))
	binary.BigEndian.PutUint64(n[8:], uint64(e.CreatedAt.UnixMicro()))
	h.Write(n[:])
	h.Write(d.Sum(nil))
	return h.Sum(nil)
}

// Verify recomputes the chain of the tenant in ctx, entry by entry from
// where retention last cut it, and reports up to maxBreaks broken links:
// a changed entry, a missing one, entries out of order, or a chain that
// ends before its head. It streams the log (memory stays flat).
func (r AuditLog) Verify(ctx context.Context, maxBreaks int) (AuditVerification, error) {
	var v AuditVerification
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		v = AuditVerification{}
		var headHash []byte
		prevHash := zeroHash
		err := tx.QueryRowContext(ctx, "SELECT seq, hash, cut_seq, cut_hash FROM audit_chains").
			Scan(&v.Head, &headHash, &v.CutSeq, &prevHash)
		if err == sql.ErrNoRows {
			v.Head, v.CutSeq, prevHash = 0, 0, zeroHash
		} else if err != nil {
			return err
		}
		add := func(seq int64, id uuid.UUID, format string, args ...any) bool {
			v.Breaks = append(v.Breaks, AuditBreak{Seq: seq, EntryID: id, Reason: fmt.Sprintf(format, args...)})
			return len(v.Breaks) >= maxBreaks
		}
		rows, err := tx.QueryContext(ctx, `SELECT id, tenant_id, seq, created_at, actor_type, actor_id, actor_email, action,
			resource_type, resource_id, description, ip_address, user_agent, request_id, old_values::text, new_values::text, hash
			FROM audit_logs ORDER BY seq, created_at`)
		if err != nil {
			return err
		}
		defer rows.Close()
		prevSeq := v.CutSeq
		var e AuditEntry
		var old, new string
		for rows.Next() {
			if err := rows.Scan(&e.ID, &e.TenantID, &e.Seq, &e.CreatedAt, &e.ActorType, &e.ActorID, &e.ActorEmail, &e.Action,
				&e.ResourceType, &e.ResourceID, &e.Description, &e.IPAddress, &e.UserAgent, &e.RequestID, &old, &new, &e.Hash); err != nil {
				return err
			}
			e.OldValues, e.NewValues = []byte(old), []byte(new)
			v.Entries++
			switch {
			case e.Seq <= prevSeq && e.Seq <= v.CutSeq:
				if add(e.Seq, e.ID, "entry %d precedes the retention cut at %d", e.Seq, v.CutSeq) {
					return nil
				}
			case e.Seq <= prevSeq:
				if add(e.Seq, e.ID, "entry %d is out of order (after entry %d)", e.Seq, prevSeq) {
					return nil
				}
			case e.Seq > prevSeq+1:
				if add(prevSeq+1, uuid.Nil, "entries %d to %d are missing", prevSeq+1, e.Seq-1) {
					return nil
				}
			case !bytes.Equal(auditLink(prevHash, &e), e.Hash):
				if add(e.Seq, e.ID, "entry %d does not match its hash (changed, or linked to a changed entry)", e.Seq) {
					return nil
				}
			}
			prevSeq, prevHash = max(prevSeq, e.Seq), e.Hash
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if prevSeq < v.Head {
			add(prevSeq+1, uuid.Nil, "entries %d to %d are missing (the chain's head is %d)", prevSeq+1, v.Head, v.Head)
		} else if v.Head > 0 && !bytes.Equal(prevHash, headHash) {
			add(v.Head, e.ID, "the last entry does not match the chain's head")
		}
		return nil
	})
	return v, err
}
