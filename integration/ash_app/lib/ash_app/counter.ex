defmodule AshApp.Counter do
  @moduledoc """
  A counter whose atomic updates the record's actor evaluates (`AshApp.CasCounter` is the same
  resource, always updated with the shim's compare-and-set loop).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :name, :string, public?: true
    attribute :count, :integer, default: 0, allow_nil?: false, public?: true
    attribute :label, :string, public?: true
    attribute :version, :integer, default: 0, public?: true
    attribute :secret, :string, public?: true, sensitive?: true
    attribute :touched_at, :utc_datetime, public?: true
  end

  identities do
    identity :unique_name, [:name]
  end

  actions do
    defaults [:read, :destroy, update: :*]

    create :create do
      primary? true
      accept [:id, :name, :count, :label, :version, :secret, :touched_at]
    end

    # keyset pages (on a :utc_datetime, say)
    read :pages do
      pagination keyset?: true, required?: false
    end

    create :hit do
      accept [:name, :count]
      upsert? true
      upsert_identity :unique_name
      upsert_fields []
      change atomic_update(:count, expr(count + 1))
    end

    create :newer do
      accept [:name, :version, :label]
      upsert? true
      upsert_identity :unique_name
      upsert_fields [:version, :label]
      upsert_condition expr(version < upsert_conflict(:version))
    end

    # an upsert condition the node cannot evaluate (string_length): Ash checks it on the
    # record read, and the write is guarded by the values read
    create :longer do
      accept [:name, :label]
      upsert? true
      upsert_identity :unique_name
      upsert_fields [:label]
      upsert_condition expr(string_length(label) < string_length(upsert_conflict(:label)))
    end

    # atomics on create (`atomic_set`): evaluated against the record being created
    create :create_stamped do
      accept [:name, :count]
      change atomic_set(:label, expr(name <> "@created"))
      change atomic_set(:version, expr((^atomic_ref(:count) || 0) * 10))
      change atomic_set(:touched_at, expr(now()))
    end

    create :create_checked do
      accept [:name]
      argument :start, :integer

      change atomic_set(
               :count,
               expr(
                 if name == "none" do
                   nil
                 else
                   ^arg(:start)
                 end
               )
             )
    end

    create :upsert_stamped do
      accept [:name, :count]
      upsert? true
      upsert_identity :unique_name
      upsert_fields [:count]
      change atomic_set(:label, expr(name <> "@created"))
    end

    # a value that must be cast before it is stored (a DateTime with microseconds into a
    # :utc_datetime), set atomically by the compare-and-set loop
    update :touch do
      change set_attribute(:touched_at, &DateTime.utc_now/0)
    end

    destroy :archive do
      soft? true
      change set_attribute(:touched_at, &DateTime.utc_now/0)
    end

    update :increment do
      change atomic_update(:count, expr(count + 1))
    end

    update :add do
      argument :amount, :integer, allow_nil?: false
      change atomic_update(:count, expr(count + ^arg(:amount)))
    end

    update :relabel do
      change atomic_update(:label, expr(name <> "#" <> "x"))
    end

    update :bounded_increment do
      change atomic_update(
               :count,
               expr(
                 if count >= 3 do
                   error(Ash.Error.Changes.InvalidAttribute, %{
                     field: :count,
                     message: "is at its maximum"
                   })
                 else
                   count + 1
                 end
               )
             )
    end

    update :downcase_label do
      # string_downcase is not a node expression: the compare-and-set loop does it
      change atomic_update(:label, expr(string_downcase(label)))
    end

    update :touch_label do
      require_atomic? false

      change fn changeset, _ ->
        Ash.Changeset.force_change_attribute(changeset, :label, "touched")
      end
    end
  end
end

defmodule AshApp.CasCounter do
  @moduledoc "`AshApp.Counter`, always updated with the shim's compare-and-set loop."
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    atomics_in_node?(false)
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :name, :string, public?: true
    attribute :count, :integer, default: 0, allow_nil?: false, public?: true
    attribute :label, :string, public?: true
    attribute :version, :integer, default: 0, public?: true
    attribute :secret, :string, public?: true, sensitive?: true
  end

  identities do
    identity :unique_name, [:name]
  end

  actions do
    defaults [:read, :destroy, update: :*]

    create :create do
      primary? true
      accept [:id, :name, :count, :label, :version, :secret]
    end

    create :hit do
      accept [:name, :count]
      upsert? true
      upsert_identity :unique_name
      upsert_fields []
      change atomic_update(:count, expr(count + 1))
    end

    create :newer do
      accept [:name, :version, :label]
      upsert? true
      upsert_identity :unique_name
      upsert_fields [:version, :label]
      upsert_condition expr(version < upsert_conflict(:version))
    end

    update :increment do
      change atomic_update(:count, expr(count + 1))
    end

    update :add do
      argument :amount, :integer, allow_nil?: false
      change atomic_update(:count, expr(count + ^arg(:amount)))
    end

    update :relabel do
      change atomic_update(:label, expr(name <> "#" <> "x"))
    end

    update :bounded_increment do
      change atomic_update(
               :count,
               expr(
                 if count >= 3 do
                   error(Ash.Error.Changes.InvalidAttribute, %{
                     field: :count,
                     message: "is at its maximum"
                   })
                 else
                   count + 1
                 end
               )
             )
    end

    update :downcase_label do
      # string_downcase is not a node expression: the compare-and-set loop does it
      change atomic_update(:label, expr(string_downcase(label)))
    end

    update :touch_label do
      require_atomic? false

      change fn changeset, _ ->
        Ash.Changeset.force_change_attribute(changeset, :label, "touched")
      end
    end
  end
end
