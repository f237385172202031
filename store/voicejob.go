package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/uptrace/bun"
)

// Voice job kinds and statuses.
const (
	JobTranscribe = "transcribe"
	JobSynthesize = "synthesize"

	JobPending   = "pending"
	JobRunning   = "running"
	JobSucceeded = "succeeded"
	JobFailed    = "failed"
)

// VoiceJob is a batch speech job on a file: a WAV to transcribe (output:
// the text) or a text to synthesize (output: a WAV).
type VoiceJob struct {
	bun.BaseModel `bun:"table:voice_jobs"`

	ID         uuid.UUID       `bun:"id,pk,type:uuid,default:gen_random_uuid()"`
	TenantID   uuid.UUID       `bun:"tenant_id,type:uuid"`
	Kind       string          `bun:"kind"`
	Status     string          `bun:"status"`
	Options    json.RawMessage `bun:"options,type:jsonb"`
	Input      []byte          `bun:"input"`
	Output     []byte          `bun:"output"`
	Error      string          `bun:"error"`
	CreatedAt  time.Time       `bun:"created_at,nullzero,default:now()"`
	FinishedAt *time.Time      `bun:"finished_at"`
}

// VoiceJobs is the voice job repository, scoped to the tenant in ctx.
type VoiceJobs struct{ db *DB }

// VoiceJobs returns the voice job repository.
func (db *DB) VoiceJobs() VoiceJobs { return VoiceJobs{db} }

// Create stores a new pending job.
func (r VoiceJobs) Create(ctx context.Context, j *VoiceJob) error {
	j.Status = JobPending
	if len(j.Options) == 0 {
		j.Options = json.RawMessage(`{}`)
	}
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(j).ExcludeColumn("tenant_id", "created_at", "output", "finished_at").Returning("*").Exec(ctx)
		return err
	})
}

// Get returns a job of the tenant.
func (r VoiceJobs) Get(ctx context.Context, id uuid.UUID) (*VoiceJob, error) {
	j := new(VoiceJob)
	err := r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		return tx.NewSelect().Model(j).Where("id = ?", id).Scan(ctx)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return j, err
}

// SetStatus records a job's progress; a finished status stores the output
// or the error and the finish time.
func (r VoiceJobs) SetStatus(ctx context.Context, id uuid.UUID, status string, output []byte, reason string) error {
	return r.db.InTenant(ctx, func(ctx context.Context, tx bun.Tx) error {
		q := tx.NewUpdate().Model((*VoiceJob)(nil)).Set("status = ?", status).Where("id = ?", id)
		if status == JobSucceeded || status == JobFailed {
			q = q.Set("output = ?", output).Set("error = ?", reason).Set("finished_at = now()")
		}
		_, err := q.Exec(ctx)
		return err
	})
}
