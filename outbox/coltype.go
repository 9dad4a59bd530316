package outbox

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/pgoutbox/pgoutbox/decoder"
)

// More type OIDs (pg_type.dat) for the Connect types of Debezium's PostgreSQL connector.
const (
	oidBool        = 16
	oidInt8        = 20
	oidInt2        = 21
	oidInt4        = 23
	oidOID         = 26
	oidFloat4      = 700
	oidFloat8      = 701
	oidTimestamp   = 1114
	oidTimestampTZ = 1184
	oidNumeric     = 1700
	oidUUID        = 2950
)

// valueKind says how a column's pgoutput text becomes the JSON of its Connect value.
type valueKind uint8

const (
	kindString      valueKind = iota // text as a JSON string
	kindInteger                      // int2/int4/int8: the text is already the JSON number
	kindBool                         // "t"/"f" → true/false
	kindBytes                        // bytea → base64 string
	kindDecimal                      // numeric(p,s) → Kafka Decimal: base64 of the unscaled value
	kindVarDecimal                   // numeric → Debezium VariableScaleDecimal {"scale","value"}
	kindFloat32                      // float4 → Java Float.toString
	kindFloat64                      // float8 → Java Double.toString
	kindTimestampMS                  // timestamp(0-3) → io.debezium.time.Timestamp, epoch ms
	kindTimestampUS                  // timestamp(4-6) → io.debezium.time.MicroTimestamp, epoch µs
)

// colType is the Connect schema Debezium gives a column and how to write its values.
type colType struct {
	kind   valueKind
	schema schema // optional is set per column by the binding
}

// Semantic type names and versions of Debezium and Kafka Connect.
const (
	nameJSON        = "io.debezium.data.Json"                 // Json.java:20, version Json.java:21
	nameUUID        = "io.debezium.data.Uuid"                 // Uuid.java:21, version Uuid.java:22
	nameVarDecimal  = "io.debezium.data.VariableScaleDecimal" // VariableScaleDecimal.java:26
	nameDecimal     = "org.apache.kafka.connect.data.Decimal" // Kafka Decimal.LOGICAL_NAME
	nameTimestamp   = "io.debezium.time.Timestamp"            // Timestamp.java:27
	nameMicroTime   = "io.debezium.time.MicroTimestamp"       // MicroTimestamp.java:27
	paramScale      = "scale"                                 // Decimal.SCALE_FIELD
	paramPrecision  = "connect.decimal.precision"             // SpecialValueDecimal.PRECISION_PARAMETER_KEY
	varDecimalDoc   = "Variable scaled decimal"               // SchemaFactory.java:374
	varDecimalScale = "scale"                                 // VariableScaleDecimal.SCALE_FIELD
	varDecimalValue = "value"                                 // VariableScaleDecimal.VALUE_FIELD
)

// connectType returns the Connect schema Debezium 3.6's PostgreSQL connector gives a column
// with its default settings (decimal.handling.mode=precise, binary.handling.mode=bytes,
// time.precision.mode=adaptive): PostgresValueConverter.schemaBuilder
// (PostgresValueConverter.java:198-378) and, for the plain JDBC types, its superclass
// JdbcValueConverters.schemaBuilder (JdbcValueConverters.java:160-250). User-defined
// types (domains, citext) are written as strings. Types an outbox has no use for are an
// error naming the column.
func connectType(col decoder.Column) (colType, error) {
	switch col.TypeOID {
	case oidText, oidVarchar, oidBPChar:
		return colType{kind: kindString, schema: schema{typ: "string"}}, nil
	case oidJSON, oidJSONB: // PostgresValueConverter.java:215-217 → Json.builder()
		return colType{kind: kindString, schema: schema{typ: "string", name: nameJSON, version: 1}}, nil
	case oidUUID: // PostgresValueConverter.java:230-231 → Uuid.builder()
		return colType{kind: kindString, schema: schema{typ: "string", name: nameUUID, version: 1}}, nil
	case oidInt2: // JdbcValueConverters.java:183-185
		return colType{kind: kindInteger, schema: schema{typ: "int16"}}, nil
	case oidInt4: // JdbcValueConverters.java:186-188
		return colType{kind: kindInteger, schema: schema{typ: "int32"}}, nil
	case oidInt8, oidOID: // JdbcValueConverters.java:189-191; OID: PostgresValueConverter.java:213-214
		return colType{kind: kindInteger, schema: schema{typ: "int64"}}, nil
	case oidBool: // JdbcValueConverters.java:166-167
		return colType{kind: kindBool, schema: schema{typ: "boolean"}}, nil
	case oidBytea: // PostgresValueConverter.java:238-239, binary.handling.mode=bytes
		return colType{kind: kindBytes, schema: schema{typ: "bytes"}}, nil
	case oidFloat4: // JdbcValueConverters.java:194-196
		return colType{kind: kindFloat32, schema: schema{typ: "float"}}, nil
	case oidFloat8: // JdbcValueConverters.java:197-200
		return colType{kind: kindFloat64, schema: schema{typ: "double"}}, nil
	case oidNumeric:
		return numericType(col)
	case oidTimestamp:
		// TemporalPrecisionMode.ADAPTIVE: precision 0-3 → Timestamp (ms), 4-6 → MicroTimestamp
		// (µs); no typmod means precision 6 (PostgresType.length via pgjdbc's TypeInfoCache).
		if col.TypeMod >= 0 && col.TypeMod <= 3 {
			return colType{kind: kindTimestampMS, schema: schema{typ: "int64", name: nameTimestamp, version: 1}}, nil
		}
		return colType{kind: kindTimestampUS, schema: schema{typ: "int64", name: nameMicroTime, version: 1}}, nil
	}
	if col.TypeOID >= firstUserOID {
		return colType{kind: kindString, schema: schema{typ: "string"}}, nil
	}
	return colType{}, fmt.Errorf("column %q has type oid %d, which pgoutbox does not write in Debezium's JSON (supported: text, varchar, char, uuid, json, jsonb, smallint, integer, bigint, boolean, bytea, real, double precision, numeric, timestamp); use the raw format", col.Name, col.TypeOID)
}

// numericType follows PostgresValueConverter.numericSchema (PostgresValueConverter.java:380-385):
// numeric without a precision is a VariableScaleDecimal struct, numeric(p,s) a Kafka
// Decimal with scale s and the precision as connect.decimal.precision
// (SpecialValueDecimal.java:155-161, Decimal.builder: name, "scale" parameter, version 1).
func numericType(col decoder.Column) (colType, error) {
	if col.TypeMod < 4 {
		return colType{kind: kindVarDecimal, schema: schema{
			typ: "struct", name: nameVarDecimal, version: 1, doc: varDecimalDoc,
			fields: []field{
				{varDecimalScale, &schema{typ: "int32"}},
				{varDecimalValue, &schema{typ: "bytes"}},
			},
		}}, nil
	}
	precision := (col.TypeMod - 4) >> 16 & 0xFFFF
	scale := (col.TypeMod - 4) & 0x7FF
	if (col.TypeMod-4)&0x400 != 0 { // PostgreSQL 15+ negative scale
		return colType{}, fmt.Errorf("column %q is numeric with a negative scale, which pgoutbox does not write in Debezium's JSON", col.Name)
	}
	return colType{kind: kindDecimal, schema: schema{
		typ: "bytes", name: nameDecimal, version: 1,
		params: []param{{paramScale, strconv.Itoa(int(scale))}, {paramPrecision, strconv.Itoa(int(precision))}},
	}}, nil
}

// appendValueJSON appends the JSON JsonConverter.convertToJson writes for a non-NULL
// column value (JsonConverter.java:583-695): strings quoted, integers and booleans
// bare, bytes as base64 (BinaryNode), Decimal through its logical converter with the
// default decimal.format=BASE64 (JsonConverter.java:155-160). text is the value's
// pgoutput text form; raw the decoded bytes of a bytea.
func appendValueJSON(dst []byte, t *colType, text []byte, bin []byte) ([]byte, error) {
	switch t.kind {
	case kindString:
		return appendJSONString(dst, text), nil
	case kindInteger:
		return append(dst, text...), nil
	case kindBool:
		switch string(text) {
		case "t":
			return append(dst, "true"...), nil
		case "f":
			return append(dst, "false"...), nil
		}
		return dst, fmt.Errorf("boolean %q", text)
	case kindBytes:
		return appendJSONBase64(dst, bin), nil
	case kindDecimal:
		unscaled, _, err := parseNumeric(text)
		if err != nil {
			return dst, err
		}
		return appendJSONBase64(dst, twosComplement(unscaled)), nil
	case kindVarDecimal:
		unscaled, scale, err := parseNumeric(text)
		if err != nil {
			return dst, err
		}
		// VariableScaleDecimal.fromLogical: a struct of the BigDecimal's scale and the
		// unscaled value's BigInteger.toByteArray.
		dst = append(dst, `{"scale":`...)
		dst = strconv.AppendInt(dst, int64(scale), 10)
		dst = append(dst, `,"value":`...)
		dst = appendJSONBase64(dst, twosComplement(unscaled))
		return append(dst, '}'), nil
	case kindFloat32:
		f, err := strconv.ParseFloat(string(text), 32)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return dst, err
		}
		return appendJavaFloat32(dst, float32(f)), nil
	case kindFloat64:
		f, err := strconv.ParseFloat(string(text), 64)
		if err != nil && !errors.Is(err, strconv.ErrRange) {
			return dst, err
		}
		return appendJavaDouble(dst, f), nil
	case kindTimestampMS, kindTimestampUS:
		ts, err := parseTimestamp(text)
		if err != nil {
			return dst, err
		}
		if t.kind == kindTimestampMS {
			return strconv.AppendInt(dst, ts.UnixMilli(), 10), nil
		}
		return strconv.AppendInt(dst, ts.UnixMicro(), 10), nil
	}
	return dst, fmt.Errorf("unknown value kind %d", t.kind)
}

// parseNumeric reads numeric_out's text ("-12.340") as an unscaled integer and a scale,
// as Java's new BigDecimal(String) does for it. NaN and the infinities have no
// Decimal form.
func parseNumeric(text []byte) (*big.Int, int, error) {
	digits := make([]byte, 0, len(text))
	scale := -1
	for i, c := range text {
		switch {
		case c >= '0' && c <= '9':
			digits = append(digits, c)
			if scale >= 0 {
				scale++
			}
		case c == '-' && i == 0:
			digits = append(digits, c)
		case c == '.' && scale < 0:
			scale = 0
		default:
			return nil, 0, fmt.Errorf("numeric %q has no Decimal form", text)
		}
	}
	n, ok := new(big.Int).SetString(string(digits), 10)
	if !ok {
		return nil, 0, fmt.Errorf("numeric %q has no Decimal form", text)
	}
	return n, max(scale, 0), nil
}

// twosComplement is Java's BigInteger.toByteArray: the minimal big-endian two's
// complement, bitLength/8+1 bytes.
func twosComplement(n *big.Int) []byte {
	var bitLen int
	if n.Sign() < 0 {
		bitLen = new(big.Int).Sub(new(big.Int).Neg(n), big.NewInt(1)).BitLen()
	} else {
		bitLen = n.BitLen()
	}
	size := bitLen/8 + 1
	v := n
	if n.Sign() < 0 {
		v = new(big.Int).Add(n, new(big.Int).Lsh(big.NewInt(1), uint(8*size)))
	}
	out := make([]byte, size)
	return v.FillBytes(out)
}

// parseTimestamp reads timestamp_out/timestamptz_out's ISO text ("2024-05-06 07:08:09.123456"
// with an optional "+02", "+05:30" or "-03:30:15" offset). A timestamp without time
// zone is taken as UTC, as Debezium's MicroTimestamp/Timestamp do.
func parseTimestamp(text []byte) (time.Time, error) {
	s := string(text)
	bad := func() (time.Time, error) {
		return time.Time{}, fmt.Errorf("timestamp %q is not an ISO timestamp pgoutbox can read", s)
	}
	num := func(from, n int) (int, bool) {
		if from+n > len(s) {
			return 0, false
		}
		v := 0
		for i := from; i < from+n; i++ {
			if s[i] < '0' || s[i] > '9' {
				return 0, false
			}
			v = v*10 + int(s[i]-'0')
		}
		return v, true
	}
	// The year may have more than four digits.
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i < 4 || i+15 > len(s) || s[i] != '-' || s[i+3] != '-' || s[i+6] != ' ' || s[i+9] != ':' || s[i+12] != ':' {
		return bad()
	}
	year, _ := num(0, i)
	month, ok1 := num(i+1, 2)
	day, ok2 := num(i+4, 2)
	hour, ok3 := num(i+7, 2)
	minute, ok4 := num(i+10, 2)
	sec, ok5 := num(i+13, 2)
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return bad()
	}
	i += 15
	nsec := 0
	if i < len(s) && s[i] == '.' {
		i++
		scale := 100_000_000
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			nsec += int(s[i]-'0') * scale
			scale /= 10
		}
	}
	offset := 0
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		sign := 1
		if s[i] == '-' {
			sign = -1
		}
		h, ok := num(i+1, 2)
		if !ok {
			return bad()
		}
		offset = h * 3600
		i += 3
		for _, unit := range []int{60, 1} {
			if i < len(s) && s[i] == ':' {
				v, ok := num(i+1, 2)
				if !ok {
					return bad()
				}
				offset += v * unit
				i += 3
			}
		}
		offset *= sign
	}
	if i != len(s) {
		return bad() // "infinity", " BC", or another DateStyle
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	return t.Add(-time.Duration(offset) * time.Second), nil
}
