package workflows

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/workflow"

	"github.com/agentvoicebox/avb/store"
	"github.com/agentvoicebox/avb/tenancy"
	"github.com/agentvoicebox/avb/voice"
	"github.com/agentvoicebox/avb/voice/audio"
	"github.com/agentvoicebox/avb/voice/stt"
	"github.com/agentvoicebox/avb/voice/tts"
	"github.com/agentvoicebox/avb/voice/vad"
	"github.com/agentvoicebox/avb/voice/wav"
)

// JobInput names a stored voice job. The file itself stays in the database:
// workflow histories carry ids, not audio.
type JobInput struct {
	JobID, TenantID string
}

// JobOptions are a job's settings, stored with it.
type JobOptions struct {
	Phrases []string `json:"phrases,omitempty"` // transcribe: recognition hints
	Voice   string   `json:"voice,omitempty"`   // synthesize
}

// Jobs are the batch speech activities, on the voice-processing queue.
type Jobs struct {
	DB  *store.DB
	STT stt.Transcriber
	TTS tts.Synthesizer
}

// TranscribeJob turns a stored WAV file into text, utterance by utterance.
func TranscribeJob(ctx workflow.Context, in JobInput) error {
	var j *Jobs
	return runJob(ctx, in, j.Transcribe)
}

// SynthesizeJob speaks a stored text into a WAV file.
func SynthesizeJob(ctx workflow.Context, in JobInput) error {
	var j *Jobs
	return runJob(ctx, in, j.Synthesize)
}

// runJob marks the job running, runs its work with retries (3 attempts,
// exponential backoff), and marks it failed when every attempt failed.
func runJob(ctx workflow.Context, in JobInput, work any) error {
	var j *Jobs
	short := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{StartToCloseTimeout: 30 * time.Second, RetryPolicy: PostCallRetry})
	if err := workflow.ExecuteActivity(short, j.SetStatus, in, store.JobRunning, "").Get(ctx, nil); err != nil {
		return err
	}
	long := workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: 30 * time.Minute, HeartbeatTimeout: time.Minute, RetryPolicy: PostCallRetry})
	err := workflow.ExecuteActivity(long, work, in).Get(ctx, nil)
	if err != nil {
		if ferr := workflow.ExecuteActivity(short, j.SetStatus, in, store.JobFailed, err.Error()).Get(ctx, nil); ferr != nil {
			return ferr
		}
	}
	return err
}

func (j *Jobs) load(ctx context.Context, in JobInput) (context.Context, *store.VoiceJob, JobOptions, error) {
	var opts JobOptions
	t, err := uuid.Parse(in.TenantID)
	if err != nil {
		return nil, nil, opts, fmt.Errorf("tenant id: %w", err)
	}
	id, err := uuid.Parse(in.JobID)
	if err != nil {
		return nil, nil, opts, fmt.Errorf("job id: %w", err)
	}
	ctx = tenancy.With(ctx, t)
	job, err := j.DB.VoiceJobs().Get(ctx, id)
	if err != nil {
		return nil, nil, opts, err
	}
	if err := json.Unmarshal(job.Options, &opts); err != nil {
		return nil, nil, opts, fmt.Errorf("job options: %w", err)
	}
	return ctx, job, opts, nil
}

// SetStatus records a job's status (and, for failed, why).
func (j *Jobs) SetStatus(ctx context.Context, in JobInput, status, reason string) error {
	ctx, job, _, err := j.load(ctx, in)
	if err != nil {
		return err
	}
	return j.DB.VoiceJobs().SetStatus(ctx, job.ID, status, nil, reason)
}

// Transcribe recognizes the job's WAV, one line per utterance.
func (j *Jobs) Transcribe(ctx context.Context, in JobInput) error {
	ctx, job, opts, err := j.load(ctx, in)
	if err != nil {
		return err
	}
	samples, rate, err := wav.Read(bytes.NewReader(job.Input))
	if err != nil {
		return fmt.Errorf("read wav: %w", err)
	}
	pcm := audio.NewResampler(rate, stt.SampleRate).Process(samples, nil)
	var lines []string
	u := &voice.Utterances{STT: j.STT, Opts: stt.Options{Phrases: opts.Phrases}, VAD: vad.New(vad.Config{}),
		OnFinal: func(text string, _, _ float64) error {
			if text = strings.TrimSpace(text); text != "" {
				lines = append(lines, text)
			}
			activity.RecordHeartbeat(ctx, len(lines))
			return nil
		}}
	defer u.Close()
	for i := 0; i+voice.FrameSamples <= len(pcm); i += voice.FrameSamples {
		if err := u.Frame(ctx, pcm[i:i+voice.FrameSamples]); err != nil {
			return err
		}
	}
	if err := u.Flush(); err != nil {
		return err
	}
	return j.DB.VoiceJobs().SetStatus(ctx, job.ID, store.JobSucceeded, []byte(strings.Join(lines, "\n")), "")
}

// Synthesize speaks the job's text into a WAV at the synthesizer's rate.
func (j *Jobs) Synthesize(ctx context.Context, in JobInput) error {
	ctx, job, opts, err := j.load(ctx, in)
	if err != nil {
		return err
	}
	var pcm []int16
	err = j.TTS.Synthesize(ctx, tts.Request{Text: string(job.Input), Voice: opts.Voice}, func(s []int16) error {
		pcm = append(pcm, s...)
		activity.RecordHeartbeat(ctx, len(pcm))
		return nil
	})
	if err != nil {
		return err
	}
	var out bytes.Buffer
	if err := wav.Write(&out, pcm, j.TTS.SampleRate()); err != nil {
		return err
	}
	return j.DB.VoiceJobs().SetStatus(ctx, job.ID, store.JobSucceeded, out.Bytes(), "")
}
