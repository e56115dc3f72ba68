package store

import (
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/ch-go/proto"
	"github.com/google/uuid"
)

// ch-go's columns for a table (issue 15 §4, design 021 "ch-go"): the
// columns of one rowBuf converted into ch-go's typed columns, which are
// reset and reused across blocks and INSERTs (clickhouse-go builds a new
// block for every PrepareBatch). Test code for now: ch-go v0.74 cannot
// talk to ClickHouse 18.16 as released (it sends no client info below
// revision 54420; the server reads it from revision 54032 on), so the
// store has no ch-go path yet; design 021 says what it takes. This is
// the conversion that path would start from.

// chColumns are a table's ch-go columns in insertSQL's order.
type chColumns struct {
	input proto.Input
	fill  []func(vals any) error
}

// newChColumns builds ch-go columns for def; types are the ClickHouse
// types of the table's columns by name (LowCardinality and FixedString
// are told from them, the rest from the Go type of the values).
func newChColumns[R any](def *tableDef[R], sample *rowBuf[R], types map[string]string) (*chColumns, error) {
	c := &chColumns{}
	for i, cd := range def.cols {
		name := cd.colName()
		col, fill, err := chColumnFor(sample.bufs[i].values(0, 0), types[name])
		if err != nil {
			return nil, fmt.Errorf("column %s: %w", name, err)
		}
		c.input = append(c.input, proto.InputColumn{Name: name, Data: col})
		c.fill = append(c.fill, fill)
	}
	return c, nil
}

// load resets the columns and appends buf's rows [lo, hi).
func (c *chColumns) load(buf interface{ valuesAt(i, lo, hi int) any }, lo, hi int) error {
	c.input.Reset()
	for i, f := range c.fill {
		if err := f(buf.valuesAt(i, lo, hi)); err != nil {
			return fmt.Errorf("column %s: %w", c.input[i].Name, err)
		}
	}
	return nil
}

// valuesAt is column i's values [lo, hi).
func (b *rowBuf[R]) valuesAt(i, lo, hi int) any { return b.bufs[i].values(lo, hi) }

// chColumnFor picks the ch-go column for values of the Go type of zero
// (a typedBuf's values) and the ClickHouse type typ.
func chColumnFor(zero any, typ string) (proto.ColInput, func(any) error, error) {
	wrong := func(v any) error { return fmt.Errorf("values %T", v) }
	switch zero.(type) {
	case []string:
		var col *proto.ColStr
		var in proto.ColInput
		switch {
		case typ == "LowCardinality(String)":
			col = new(proto.ColStr)
			lc := col.LowCardinality()
			return lc, func(v any) error {
				vals, ok := v.([]string)
				if !ok {
					return wrong(v)
				}
				lc.AppendArr(vals)
				return nil
			}, nil
		case typ == "" || typ == "String":
			col = new(proto.ColStr)
			in = col
		default:
			return nil, nil, fmt.Errorf("strings into %s", typ)
		}
		return in, func(v any) error {
			vals, ok := v.([]string)
			if !ok {
				return wrong(v)
			}
			col.AppendArr(vals)
			return nil
		}, nil
	case [][]byte:
		if typ != "FixedString(16)" {
			return nil, nil, fmt.Errorf("bytes into %q", typ)
		}
		col := new(proto.ColFixedStr16)
		return col, func(v any) error {
			vals, ok := v.([][]byte)
			if !ok {
				return wrong(v)
			}
			for _, b := range vals {
				var a [16]byte
				copy(a[:], b)
				col.Append(a)
			}
			return nil
		}, nil
	case []time.Time:
		col := new(proto.ColDateTime)
		return col, func(v any) error {
			vals, ok := v.([]time.Time)
			if !ok {
				return wrong(v)
			}
			for _, t := range vals {
				col.Append(t)
			}
			return nil
		}, nil
	case []uuid.UUID:
		col := new(proto.ColUUID)
		return col, sliceFill(col), nil
	case []uint8:
		col := new(proto.ColUInt8)
		return col, sliceFill(col), nil
	case []uint16:
		col := new(proto.ColUInt16)
		return col, sliceFill(col), nil
	case []uint32:
		col := new(proto.ColUInt32)
		return col, sliceFill(col), nil
	case []uint64:
		col := new(proto.ColUInt64)
		return col, sliceFill(col), nil
	case []int32:
		col := new(proto.ColInt32)
		return col, sliceFill(col), nil
	case []int64:
		col := new(proto.ColInt64)
		return col, sliceFill(col), nil
	case []float64:
		col := new(proto.ColFloat64)
		return col, sliceFill(col), nil
	case [][]string:
		col := new(proto.ColStr).Array()
		return col, arrFill(col), nil
	case [][]uint64:
		col := new(proto.ColUInt64).Array()
		return col, arrFill(col), nil
	case [][]uint32:
		col := new(proto.ColUInt32).Array()
		return col, arrFill(col), nil
	case [][]float64:
		col := new(proto.ColFloat64).Array()
		return col, arrFill(col), nil
	}
	if strings.HasPrefix(typ, "LowCardinality") {
		return nil, nil, fmt.Errorf("%T into %s", zero, typ)
	}
	return nil, nil, fmt.Errorf("no ch-go column for %T (%s)", zero, typ)
}

// sliceFill appends values of a plain column (ch-go's []T columns).
func sliceFill[T any, C interface {
	~[]T
	proto.ColInput
}](col *C) func(any) error {
	return func(v any) error {
		vals, ok := v.([]T)
		if !ok {
			return fmt.Errorf("values %T", v)
		}
		*col = append(*col, vals...)
		return nil
	}
}

// arrFill appends the rows of an Array column.
func arrFill[T any](col *proto.ColArr[T]) func(any) error {
	return func(v any) error {
		vals, ok := v.([][]T)
		if !ok {
			return fmt.Errorf("values %T", v)
		}
		for _, a := range vals {
			col.Append(a)
		}
		return nil
	}
}
