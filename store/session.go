package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// Session statuses.
const (
	SessionCreated    = "created"
	SessionActive     = "active"
	SessionCompleted  = "completed"
	SessionError      = "error"
	SessionTerminated = "terminated"
)

// SessionMetrics are a session's totals.
type SessionMetrics struct {
	DurationSeconds    float64 `bun:"duration_seconds"`
	InputTokens        int64   `bun:"input_tokens"`
	OutputTokens       int64   `bun:"output_tokens"`
	InputAudioSeconds  float64 `bun:"input_audio_seconds"`
	OutputAudioSeconds float64 `bun:"output_audio_seconds"`
	Turns              int     `bun:"turns"`
	ToolCalls          int     `bun:"tool_calls"`
}

// Session is one voice conversation.
type Session struct {
	bun.BaseModel `bun:"table:sessions"`

	ID        uuid.UUID       `bun:"id,pk,type:uuid,default:gen_random_uuid()"`
	TenantID  uuid.UUID       `bun:"tenant_id,type:uuid"`
	ProjectID *uuid.UUID      `bun:"project_id,type:uuid"`
	APIKeyID  *uuid.UUID      `bun:"api_key_id,type:uuid"`
	UserID    *uuid.UUID      `bun:"user_id,type:uuid"`
	Status    string          `bun:"status"`
	Config    json.RawMessage `bun:"config,type:jsonb"`
	// RequestID, when set, makes the create retry-safe.
	RequestID *uuid.UUID `bun:"request_id,type:uuid"`
	SessionMetrics
	Error     string     `bun:"error"`
	CreatedAt time.Time  `bun:"created_at,nullzero,default:now()"`
	StartedAt *time.Time `bun:"started_at"`
	EndedAt   *time.Time `bun:"ended_at"`
	// WorkflowStartedAt is when Temporal confirmed the session's workflow
	// (nil: not yet; see AwaitingWorkflow).
	WorkflowStartedAt *time.Time `bun:"workflow_started_at"`
}

// SessionEvent is one recorded happening.
type SessionEvent struct {
	bun.BaseModel `bun:"table:session_events"`

	ID        uuid.UUID       `bun:"id,pk,type:uuid,default:gen_random_uuid()"`
	TenantID  uuid.UUID       `bun:"tenant_id,type:uuid"`
	SessionID uuid.UUID       `bun:"session_id,type:uuid"`
	Type      string          `bun:"type"`
	Data      json.RawMessage `bun:"data,type:jsonb"`
	CreatedAt time.Time       `bun:"created_at,nullzero,default:clock_timestamp()"`
}

// Sessions is the session repository, scoped to the tenant in ctx.
type Sessions struct{ db *DB }

// Sessions returns the session repository.
func (db *DB) Sessions() Sessions { return Sessions{db} }

// Create stores a new session (status created). When an earlier request
// with the same RequestID created one, s becomes that session.
func (r Sessions) Create(ctx context.Context, s *Session) error {
	if s.Status == "" {
		s.Status = SessionCreated
	}
	if len(s.Config) == 0 {
		s.Config = json.RawMessage(`{}`)
	}
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		if s.RequestID != nil {
			if err := lockRequest(ctx, tx, *s.RequestID); err != nil {
				return err
			}
			var prior []Session
			if err := tx.NewSelect().Model(&prior).Where("request_id = ?", *s.RequestID).Scan(ctx); err != nil {
				return err
			}
			if len(prior) == 1 {
				*s = prior[0]
				return nil
			}
		}
		_, err := tx.NewInsert().Model(s).ExcludeColumn("tenant_id", "created_at").Returning("*").Exec(ctx)
		DescribeAudit(ctx, s.ID.String(), "created session", nil, nil)
		return err
	})
}

// WorkflowStarted records that the session's workflow exists; first is
// true for the call that recorded it.
func (r Sessions) WorkflowStarted(ctx context.Context, id uuid.UUID) (first bool, err error) {
	err = r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Model((*Session)(nil)).Set("workflow_started_at = now()").
			Where("id = ? AND workflow_started_at IS NULL", id).Exec(ctx)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		first = n == 1
		return err
	})
	return first, err
}

// AwaitingWorkflow is an open session whose workflow is not confirmed.
type AwaitingWorkflow struct {
	ID        uuid.UUID
	TenantID  uuid.UUID
	Status    string
	Config    json.RawMessage
	CreatedAt time.Time
}

// AwaitingWorkflow lists open sessions of every tenant, created more than
// olderThan ago, whose workflow Temporal has not confirmed, oldest first.
func (db *DB) AwaitingWorkflow(ctx context.Context, olderThan time.Duration, max int) ([]AwaitingWorkflow, error) {
	var out []AwaitingWorkflow
	err := db.do(ctx, func(ctx context.Context) error {
		out = out[:0]
		rows, err := db.Pool.Query(ctx, "SELECT id, tenant_id, status, config, created_at FROM sessions_awaiting_workflow($1::interval, $2)",
			olderThan.String(), max)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var a AwaitingWorkflow
			if err := rows.Scan(&a.ID, &a.TenantID, &a.Status, &a.Config, &a.CreatedAt); err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	return out, err
}

// Get returns a session of the tenant.
func (r Sessions) Get(ctx context.Context, id uuid.UUID) (*Session, error) {
	s := new(Session)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(s).Where("id = ?", id).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

// ErrSessionEnded: the session is completed, failed or terminated.
var ErrSessionEnded = errors.New("session has ended")

// Start marks a created session active (with its configuration) and returns it.
func (r Sessions) Start(ctx context.Context, id uuid.UUID, config json.RawMessage) (*Session, error) {
	s := new(Session)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewUpdate().Model(s).Set("status = ?", SessionActive).Set("config = ?", string(config)).
			Set("started_at = COALESCE(started_at, now())").
			Where("id = ? AND status IN (?, ?)", id, SessionCreated, SessionActive).Returning("*").Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := r.Get(ctx, id); gerr != nil {
			return nil, gerr
		}
		return nil, ErrSessionEnded
	}
	return s, err
}

// Finish ends an open session with its final status and metrics. Ending an
// ended session changes nothing and returns it as it is.
func (r Sessions) Finish(ctx context.Context, id uuid.UUID, status, reason string, m SessionMetrics) (*Session, error) {
	s := new(Session)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		err := tx.NewUpdate().Model(s).Set("status = ?", status).Set("error = ?", reason).
			Set("duration_seconds = ?, input_tokens = ?, output_tokens = ?", m.DurationSeconds, m.InputTokens, m.OutputTokens).
			Set("input_audio_seconds = ?, output_audio_seconds = ?, turns = ?, tool_calls = ?", m.InputAudioSeconds, m.OutputAudioSeconds, m.Turns, m.ToolCalls).
			Set("ended_at = now()").
			Where("id = ? AND status IN (?, ?)", id, SessionCreated, SessionActive).Returning("*").Scan(ctx)
		if errors.Is(err, sql.ErrNoRows) {
			return tx.NewSelect().Model(s).Where("id = ?", id).Scan(ctx)
		}
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return s, err
}

// SessionFilter selects sessions for List.
type SessionFilter struct {
	Status        string
	ProjectID     *uuid.UUID
	After, Before *time.Time
}

// List returns one page of sessions, newest first.
func (r Sessions) List(ctx context.Context, f SessionFilter, size int, token string) ([]Session, string, error) {
	var out []Session
	var next string
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out)
		if f.Status != "" {
			q = q.Where("status = ?", f.Status)
		}
		if f.ProjectID != nil {
			q = q.Where("project_id = ?", *f.ProjectID)
		}
		if f.After != nil {
			q = q.Where("created_at >= ?", *f.After)
		}
		if f.Before != nil {
			q = q.Where("created_at < ?", *f.Before)
		}
		var err error
		next, err = keysetPage(ctx, q, &out, size, token, true, fmt.Sprint(f.Status, f.ProjectID, f.After, f.Before),
			func(s Session) (time.Time, uuid.UUID) { return s.CreatedAt, s.ID })
		return err
	})
	return out, next, err
}

// AddEvents records events of one session.
func (r Sessions) AddEvents(ctx context.Context, events []SessionEvent) error {
	if len(events) == 0 {
		return nil
	}
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&events).ExcludeColumn("id", "tenant_id", "created_at").Exec(ctx)
		return err
	})
}

// Conversation returns a session's last limit transcript and response
// events, oldest first: the history a call that rejoins the session restores.
func (r Sessions) Conversation(ctx context.Context, sessionID uuid.UUID, limit int) ([]SessionEvent, error) {
	var out []SessionEvent
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(&out).Where("session_id = ?", sessionID).Where("type IN (?)", bun.In([]string{"transcript", "response"})).
			OrderExpr("created_at DESC, id DESC").Limit(int64(limit)).Scan(ctx)
	})
	slices.Reverse(out)
	return out, err
}

// Events returns one page of a session's events, oldest first.
func (r Sessions) Events(ctx context.Context, sessionID uuid.UUID, size int, token string) ([]SessionEvent, string, error) {
	var out []SessionEvent
	var next string
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewSelect().Model(&out).Where("session_id = ?", sessionID)
		var err error
		next, err = keysetPage(ctx, q, &out, size, token, false, sessionID.String(),
			func(e SessionEvent) (time.Time, uuid.UUID) { return e.CreatedAt, e.ID })
		return err
	})
	return out, next, err
}
