package analyzer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containsec/contain/internal/auth"
)

// A manual operation (lock, unlock, reset, import) is written to the
// baselines bucket by an operator. Only the analyzer and operator
// credentials may write the bucket (internal/auth); the operation also
// carries the operator's signature (Doc.OpSig) over the key, the op and
// the document's content, so the analyzer knows who did it (Doc.OpActor)
// and applies nothing a known operator did not sign.

// opBody is what an operation's signature covers.
type opBody struct {
	Key     string `json:"key"`
	Op      string `json:"op"`
	Content string `json:"content"`
	Actor   string `json:"actor"`
}

// OpPurpose is what an operation on key is signed for.
func OpPurpose(op, key string) string { return "baseline " + op + " " + key }

// opContent is the SHA-256 of d without its checksum and signature.
func opContent(d *Doc) (string, error) {
	c := *d
	c.Checksum, c.OpSig, c.OpActor = "", nil, ""
	raw, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:]), nil
}

// signOp sets d.Op, d.OpActor and d.OpSig with signer.
func signOp(d *Doc, op string, signer *auth.Signer) error {
	if signer == nil {
		return errors.New("baseline " + op + ": operator credentials are required to sign the operation")
	}
	d.Op, d.OpActor, d.OpSig = op, "", nil
	sum, err := opContent(d)
	if err != nil {
		return err
	}
	actor := signer.Actor()
	body, err := json.Marshal(opBody{Key: d.Key, Op: op, Content: sum, Actor: actor})
	if err != nil {
		return err
	}
	raw, err := signer.Sign(OpPurpose(op, d.Key), body)
	if err != nil {
		return err
	}
	d.OpActor, d.OpSig = actor, raw
	return nil
}

// verifyOp checks d's operation signature. replay makes a nonce seen
// before fail (a live update); a stored operation is checked without it.
func verifyOp(v *auth.Verifier, d *Doc, replay bool) (actor string, err error) {
	if len(d.OpSig) == 0 {
		return "", &auth.RefusedError{Reason: auth.ReasonUnsigned, Detail: fmt.Sprintf("baseline %s: %s operation is not signed by an operator", d.Key, d.Op)}
	}
	purpose := OpPurpose(d.Op, d.Key)
	var env *auth.Signed
	if replay {
		env, err = v.Verify(d.OpSig, purpose)
	} else if env, err = auth.Parse(d.OpSig); err == nil {
		err = v.VerifyEnvelope(env, purpose)
	}
	if err != nil {
		return "", err
	}
	var body opBody
	if err := json.Unmarshal(env.Body, &body); err != nil {
		return "", &auth.RefusedError{Reason: auth.ReasonMalformed, Detail: "operation body: " + err.Error()}
	}
	sum, err := opContent(d)
	if err != nil {
		return "", err
	}
	if body.Key != d.Key || body.Op != d.Op || body.Content != sum || body.Actor != d.OpActor || body.Actor != env.Actor() {
		return "", &auth.RefusedError{Reason: auth.ReasonBadSignature, Detail: fmt.Sprintf("baseline %s: the signature does not cover this %s operation's content or actor", d.Key, d.Op)}
	}
	return env.Actor(), nil
}
