defmodule AshGenServer.Values do
  @moduledoc """
  Converts between Ash values and the plain Erlang terms stored on the node.

  Writes go through `Ash.Type.dump_to_native/3` and reads through `Ash.Type.cast_stored/3`, like
  `Ash.DataLayer.Ets`, so every Ash type round-trips: the node stores each attribute's native
  form (a UUID as its 16 raw bytes, an atom as its name, a date as a `%Date{}` map, an embedded
  resource as a plain map...). A record on the node is a map with one key per attribute.

  This module also says which attribute types the node can compare exactly (see
  `pushdown/1`): only where Erlang term order on the stored form is the order Ash uses on the
  cast values does a comparison or a sort go to the node.
  """

  alias Ash.Resource.Info

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

  @doc """
  How far the node can evaluate comparisons on an attribute of this type: `:order` (equality,
  `in`, `<`, `<=`, `>`, `>=`, sort, min/max) or `:none` (Ash evaluates it at runtime).
  Dates, times, datetimes, decimals, ci_strings, maps, arrays, unions, embedded and custom
  types are `:none`.
  """
  @spec pushdown(Ash.Type.t()) :: pushdown
  def pushdown(type) do
    if Map.has_key?(@ordered_types, type), do: :order, else: :none
  end

  @doc "Whether the attribute's values are numbers on the node (so `sum`/`avg` can run there)."
  @spec numeric?(Ash.Type.t()) :: boolean
  def numeric?(type), do: type in [Ash.Type.Integer, Ash.Type.Float]

  @doc """
  Dumps a literal used in a filter against `attribute`, returning `{:ok, native}` only if the
  result has the stored kind the node compares exactly (see `pushdown/1`), else `:error`.
  """
  @spec dump_comparable(Ash.Resource.Attribute.t(), term) :: {:ok, term} | :error
  def dump_comparable(%{type: type} = attribute, value) do
    with kind when not is_nil(kind) <- Map.get(@ordered_types, type),
         false <- is_nil(value),
         {:ok, native} <- dump_value(attribute, value),
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

  @doc "Dumps every attribute of a record (a resource struct) to the map stored on the node."
  @spec dump_record(Ash.Resource.t(), struct) :: {:ok, map} | {:error, term}
  def dump_record(resource, record) do
    resource
    |> Info.attributes()
    |> dump_fields(fn attribute -> Map.fetch(record, attribute.name) end)
  end

  @doc "Dumps a map or keyword of attribute changes (`%{name => value}`)."
  @spec dump_changes(Ash.Resource.t(), map | keyword) :: {:ok, map} | {:error, term}
  def dump_changes(resource, changes) do
    changes = Map.new(changes)

    resource
    |> Info.attributes()
    |> Enum.filter(&Map.has_key?(changes, &1.name))
    |> dump_fields(fn attribute -> Map.fetch(changes, attribute.name) end)
  end

  defp dump_fields(attributes, fetch) do
    Enum.reduce_while(attributes, {:ok, %{}}, fn attribute, {:ok, acc} ->
      with {:ok, value} <- fetch.(attribute),
           {:ok, native} <- dump_value(attribute, value) do
        {:cont, {:ok, Map.put(acc, attribute.name, native)}}
      else
        :error -> {:cont, {:ok, acc}}
        {:error, error} -> {:halt, {:error, error}}
      end
    end)
  end

  @doc """
  The primary key of a record (or changeset data) in stored form, e.g. `%{id: <<16 bytes>>}`.
  """
  @spec primary_key(Ash.Resource.t(), map) :: {:ok, map} | {:error, term}
  def primary_key(resource, record) do
    resource
    |> Info.primary_key()
    |> Enum.map(&Info.attribute(resource, &1))
    |> dump_fields(fn attribute -> {:ok, Map.get(record, attribute.name)} end)
  end

  @doc "Casts a stored record (a map from the node) back into a loaded resource struct."
  @spec cast_record(Ash.Resource.t(), map) :: {:ok, struct} | {:error, term}
  def cast_record(resource, stored) when is_map(stored) do
    resource
    |> Info.attributes()
    |> Enum.reduce_while({:ok, %{}}, fn attribute, {:ok, acc} ->
      case cast_stored(attribute, Map.get(stored, attribute.name)) do
        {:ok, value} ->
          {:cont, {:ok, Map.put(acc, attribute.name, value)}}

        :error ->
          {:halt,
           {:error,
            Ash.Error.Invalid.InvalidStoredData.exception(
              resource: resource,
              field: attribute.name
            )}}
      end
    end)
    |> case do
      {:ok, attrs} ->
        record =
          resource
          |> struct(attrs)
          |> Map.put(:__meta__, %Ecto.Schema.Metadata{state: :loaded, schema: resource})

        {:ok, record}

      error ->
        error
    end
  end

  @doc "Casts many stored records, stopping at the first that does not cast."
  @spec cast_records(Ash.Resource.t(), [map]) :: {:ok, [struct]} | {:error, term}
  def cast_records(resource, stored) do
    stored
    |> Enum.reduce_while({:ok, []}, fn record, {:ok, acc} ->
      case cast_record(resource, record) do
        {:ok, record} -> {:cont, {:ok, [record | acc]}}
        error -> {:halt, error}
      end
    end)
    |> case do
      {:ok, records} -> {:ok, Enum.reverse(records)}
      error -> error
    end
  end

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
