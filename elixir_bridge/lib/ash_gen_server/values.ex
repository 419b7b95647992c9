defmodule AshGenServer.Values do
  @moduledoc """
  Converts between Ash values and the plain Erlang terms stored on the node.

  Writes go through `Ash.Type.dump_to_native/3` and reads through `Ash.Type.cast_stored/3`, like
  `Ash.DataLayer.Ets`, so every Ash type round-trips: the node stores each attribute's native
  form (a UUID as its 16 raw bytes, an atom as its name, a date as a `%Date{}` map, an embedded
  resource as a plain map...). A record on the node is a map with one key per attribute.

  For the types whose stored form is the value itself (see
  `AshGenServer.DataLayer.Layout.plain_kind/1`: integers, floats, strings, booleans), a value
  of the expected shape is passed through as is: that is exactly what their
  `dump_to_native/3` and `cast_stored/3` return, without the calls. Every other
  value, and every value of another type, goes through Ash. Which attributes are which is
  worked out once per resource (`AshGenServer.DataLayer.Layout`).

  This module also says which attribute types the node can compare exactly (see
  `pushdown/1`): only where Erlang term order on the stored form is the order Ash uses on the
  cast values does a comparison or a sort go to the node.
  """

  alias AshGenServer.DataLayer.Layout
  alias AshGenServer.Results

  @type pushdown :: :order | :none

  # Types whose stored form compares, in Erlang term order and with `==`, exactly as Ash
  # compares the cast values (Ash's `Comp` falls back to term order for these):
  #   integers, floats (numbers compare by value on both sides), strings (bytewise),
  #   booleans, atoms (stored as their name; names compare bytewise like atoms do),
  #   UUIDs (stored as 16 raw bytes; lowercase hex text orders like the bytes).
  @ordered_types %{
    Ash.Type.Integer => :integer,
    Ash.Type.Float => :float,
    Ash.Type.String => :binary,
    Ash.Type.Boolean => :boolean,
    Ash.Type.Atom => :binary,
    Ash.Type.UUID => :uuid,
    Ash.Type.UUIDv7 => :uuid
  }

  # Types the node compares by their value when told in `define` (`types`, PROTOCOL.md): the
  # stored form (what `dump_to_native/3` gives) and the node's type name.
  @node_types %{
    Ash.Type.Date => :date,
    Ash.Type.Time => :time,
    Ash.Type.TimeUsec => :time,
    Ash.Type.NaiveDatetime => :naive_datetime,
    Ash.Type.UtcDatetime => :datetime,
    Ash.Type.UtcDatetimeUsec => :datetime,
    Ash.Type.DateTime => :datetime,
    Ash.Type.Decimal => :decimal,
    Ash.Type.CiString => :ci_string
  }

  @doc """
  The node type (`define`'s `types`) of an attribute type the node compares by value: `:date`,
  `:time`, `:naive_datetime`, `:datetime`, `:decimal`, `:ci_string`; `nil` for the others.
  """
  @spec node_type(Ash.Type.t()) :: atom | nil
  def node_type(type), do: Map.get(@node_types, type)

  @doc """
  How far the node can evaluate comparisons on an attribute of this type: `:order` (equality,
  `in`, `<`, `<=`, `>`, `>=`, sort, min/max) or `:none` (Ash evaluates it at runtime).
  Integers, floats, strings, booleans, atoms, UUIDs and the types the node compares by value
  (`node_type/1`: dates, times, naive and UTC datetimes, decimals, ci_strings) are `:order`;
  maps, arrays, unions, embedded and custom types are `:none`.
  """
  @spec pushdown(Ash.Type.t()) :: pushdown
  def pushdown(type) do
    if Map.has_key?(@ordered_types, type) or Map.has_key?(@node_types, type),
      do: :order,
      else: :none
  end

  # A value's stored form, with no call to Ash when it is the value itself.
  defp dump(kind, attribute, value) do
    if plain?(kind, value), do: {:ok, value}, else: dump_value(attribute, value)
  end

  # A stored value cast back, with no call to Ash when it is the value itself.
  defp cast(kind, attribute, value) do
    if plain?(kind, value), do: {:ok, value}, else: cast_stored(attribute, value)
  end

  # Whether `value` is stored (and read back) as itself for an attribute of this kind.
  @compile {:inline, plain?: 2}
  defp plain?(_kind, nil), do: true
  defp plain?(:integer, value), do: is_integer(value)
  defp plain?(:string, value), do: is_binary(value)
  defp plain?(:boolean, value), do: is_boolean(value)
  defp plain?(:float, value), do: is_float(value)
  defp plain?(nil, _value), do: false

  @doc "Whether the attribute's values are numbers on the node (so `sum`/`avg` can run there)."
  @spec numeric?(Ash.Type.t()) :: boolean
  def numeric?(type), do: type in [Ash.Type.Integer, Ash.Type.Float]

  @doc """
  Dumps a literal used in a filter against `attribute`, returning `{:ok, native}` only if the
  result has the stored kind the node compares exactly (see `pushdown/1`), else `:error`.
  """
  @spec dump_comparable(Ash.Resource.Attribute.t(), term) :: {:ok, term} | :error
  def dump_comparable(%{type: type} = attribute, value) do
    with kind when not is_nil(kind) <-
           Map.get(@ordered_types, type) || Map.get(@node_types, type),
         false <- is_nil(value),
         {:ok, native} <- dump(Layout.plain_kind(type), attribute, value),
         true <- kind?(kind, native) do
      {:ok, native}
    else
      _ -> :error
    end
  end

  defp kind?(:integer, v), do: is_integer(v)
  defp kind?(:float, v), do: is_float(v) or is_integer(v)
  defp kind?(:binary, v), do: is_binary(v)
  defp kind?(:boolean, v), do: is_boolean(v)
  defp kind?(:uuid, v), do: is_binary(v) and byte_size(v) == 16
  defp kind?(:date, v), do: is_struct(v, Date)
  defp kind?(:time, v), do: is_struct(v, Time)
  defp kind?(:naive_datetime, v), do: is_struct(v, NaiveDateTime)
  defp kind?(:datetime, v), do: is_struct(v, DateTime)
  defp kind?(:decimal, v), do: is_struct(v, Decimal)
  defp kind?(:ci_string, v), do: is_binary(v)

  @doc "Dumps one value of `attribute` to its stored form."
  @spec dump_value(Ash.Resource.Attribute.t(), term) :: {:ok, term} | {:error, term}
  def dump_value(_attribute, nil), do: {:ok, nil}

  def dump_value(%{type: type, constraints: constraints} = attribute, value) do
    case Ash.Type.dump_to_native(type, value, constraints) do
      {:ok, native} -> {:ok, native}
      :error -> {:error, dump_error(attribute, value, nil)}
      {:error, error} -> {:error, dump_error(attribute, value, error)}
    end
  end

  defp dump_error(attribute, value, error) do
    Ash.Error.Changes.InvalidAttribute.exception(
      field: attribute.name,
      value: value,
      message:
        "could not be stored as #{inspect(attribute.type)}" <>
          if(error, do: ": #{inspect(error)}", else: "")
    )
  end

  @hidden_key :__ash_gen_server_key__

  @doc """
  The field that keys, on the node, the records of a resource without a primary key
  (`require_primary_key? false`): the node keys every record's actor by a primary key, so such
  a resource is defined there with this field as its primary key, and each new record gets a
  random 128-bit value in it (`dump_record/2`). It is never an attribute: reads drop it, and
  the record keeps it in its metadata (`:ash_gen_server_key`) so `AshGenServer.whereis/1` and
  `keep_alive/1` find its actor. Two records with the same attribute values are two records.
  """
  @spec hidden_key() :: atom
  def hidden_key, do: @hidden_key

  @doc """
  Dumps every attribute of a new record (a resource struct) to the map stored on the node; for
  a resource without a primary key, with a fresh `hidden_key/0`.
  """
  @spec dump_record(Ash.Resource.t(), struct) :: {:ok, map} | {:error, term}
  def dump_record(resource, record) do
    case Layout.get(resource) do
      %{primary_key: [], attributes: attributes} ->
        with {:ok, stored} <- dump_fields(attributes, record, []),
             do: {:ok, Map.put(stored, @hidden_key, :crypto.strong_rand_bytes(16))}

      %{attributes: attributes} ->
        dump_fields(attributes, record, [])
    end
  end

  @doc "Dumps a map or keyword of attribute changes (`%{name => value}`)."
  @spec dump_changes(Ash.Resource.t(), map | keyword) :: {:ok, map} | {:error, term}
  def dump_changes(resource, changes) do
    dump_fields(Layout.get(resource).attributes, Map.new(changes), [])
  end

  # Dumps, in attribute order, the fields that `values` has (a missing key is left out); the
  # first value that does not dump is the error.
  defp dump_fields([], _values, acc), do: {:ok, :maps.from_list(acc)}

  defp dump_fields([{name, kind, attribute} | fields], values, acc) do
    case values do
      %{^name => value} ->
        case dump(kind, attribute, value) do
          {:ok, native} -> dump_fields(fields, values, [{name, native} | acc])
          {:error, error} -> {:error, error}
        end

      _ ->
        dump_fields(fields, values, acc)
    end
  end

  @doc """
  Casts values computed by expressions (atomics) to their attributes' types, as a column of
  that type would when the expression is written to it (a `DateTime` with microseconds into a
  `:utc_datetime` attribute loses them, `1` into a float attribute is `1.0`...):
  `{:ok, %{name => value}}`, or an `InvalidAttribute` error for a value that does not cast.
  """
  @spec cast_computed(Ash.Resource.t(), map) :: {:ok, map} | {:error, term}
  def cast_computed(resource, values) do
    Enum.reduce_while(values, {:ok, %{}}, fn {name, value}, {:ok, acc} ->
      %{type: type, constraints: constraints} = Ash.Resource.Info.attribute(resource, name)

      case Ash.Type.cast_input(type, value, constraints) do
        {:ok, cast} ->
          {:cont, {:ok, Map.put(acc, name, cast)}}

        _ ->
          {:halt,
           {:error,
            Ash.Error.Changes.InvalidAttribute.exception(
              field: name,
              value: value,
              message: "is not a valid #{inspect(type)}"
            )}}
      end
    end)
  end

  @doc """
  The primary key of a record (or changeset data) in stored form, e.g. `%{id: <<16 bytes>>}`.
  """
  @spec primary_key(Ash.Resource.t(), map) :: {:ok, map} | {:error, term}
  def primary_key(resource, record) do
    case Layout.get(resource).primary_key do
      [] -> hidden_primary_key(record)
      primary_key -> primary_key_fields(primary_key, record, [])
    end
  end

  # A record of a resource without a primary key: the node's key kept in its metadata.
  defp hidden_primary_key(%{__metadata__: %{ash_gen_server_key: key}}),
    do: {:ok, %{@hidden_key => key}}

  defp hidden_primary_key(_record), do: {:ok, %{}}

  # Like dump_fields/3, but a missing field is `nil`.
  defp primary_key_fields([], _record, acc), do: {:ok, :maps.from_list(acc)}

  defp primary_key_fields([{name, kind, attribute} | fields], record, acc) do
    case dump(kind, attribute, Map.get(record, name)) do
      {:ok, native} -> primary_key_fields(fields, record, [{name, native} | acc])
      {:error, error} -> {:error, error}
    end
  end

  @doc "Casts a stored record (a map from the node) back into a loaded resource struct."
  @spec cast_record(Ash.Resource.t(), map) :: {:ok, struct} | {:error, term}
  def cast_record(resource, stored) when is_map(stored) do
    case cast_fields(Layout.get(resource).attributes, stored, []) do
      {:ok, attributes} ->
        record =
          resource.__struct__()
          |> Map.merge(:maps.from_list(attributes))
          |> Map.put(:__meta__, %Ecto.Schema.Metadata{state: :loaded, schema: resource})

        case stored do
          %{@hidden_key => key} ->
            {:ok, Ash.Resource.put_metadata(record, :ash_gen_server_key, key)}

          _ ->
            {:ok, record}
        end

      {:error, field} ->
        {:error, Ash.Error.Invalid.InvalidStoredData.exception(resource: resource, field: field)}
    end
  end

  # Every attribute's stored value (a missing key is `nil`), cast; the first that does not
  # cast is `{:error, name}`.
  defp cast_fields([], _stored, acc), do: {:ok, acc}

  defp cast_fields([{name, kind, attribute} | fields], stored, acc) do
    case cast(kind, attribute, Map.get(stored, name)) do
      {:ok, value} -> cast_fields(fields, stored, [{name, value} | acc])
      :error -> {:error, name}
    end
  end

  @doc "Casts many stored records, stopping at the first that does not cast."
  @spec cast_records(Ash.Resource.t(), [map]) :: {:ok, [struct]} | {:error, term}
  def cast_records(resource, stored),
    do: Results.map_ok(stored, &cast_record(resource, &1))

  @doc "Casts one stored value of `attribute` (or of `{type, constraints}`)."
  @spec cast_stored(Ash.Resource.Attribute.t() | {Ash.Type.t(), keyword}, term) ::
          {:ok, term} | :error
  def cast_stored(_attribute_or_type, nil), do: {:ok, nil}

  def cast_stored({type, constraints}, value) do
    case Ash.Type.cast_stored(type, value, constraints) do
      {:ok, value} -> {:ok, value}
      _ -> :error
    end
  end

  def cast_stored(%{type: type, constraints: constraints}, value),
    do: cast_stored({type, constraints}, value)
end
