defmodule AshApp.Author do
  @moduledoc """
  An author: an identity on `email`, attributes of every kind the data layer pushes down or
  leaves to Ash (a date, a decimal, a ci_string), a calculation, relationship aggregates over its
  posts, unrelated aggregates over all posts (`parent(name)` in their filter), and an
  optimistically locked update; a relationship whose filter refers to the author
  (`parent(score)`).
  """
  use Ash.Resource, domain: AshApp.Domain, data_layer: AshGenServer.DataLayer

  gen_server do
    inactivity_timeout :infinity
    maximum_lifetime :infinity
  end

  attributes do
    uuid_primary_key :id, writable?: true
    attribute :name, :string, allow_nil?: false, public?: true
    attribute :email, :string, public?: true
    attribute :nickname, :ci_string, public?: true
    attribute :score, :integer, public?: true
    attribute :born_on, :date, public?: true
    attribute :rating, :decimal, public?: true
    attribute :posts_written, :integer, default: 0, allow_nil?: false, public?: true
    attribute :version, :integer, default: 0, allow_nil?: false, public?: true
  end

  identities do
    identity :unique_email, [:email]
  end

  relationships do
    has_many :posts, AshApp.Post, public?: true

    # A filter on the parent: Ash loads it with a lateral join, one query per author in effect.
    has_many :posts_liked_enough, AshApp.Post do
      filter expr(likes >= parent(score))
      public? true
    end
  end

  calculations do
    calculate :name_length, :integer, expr(string_length(name)), public?: true
  end

  aggregates do
    count :post_count, :posts, public?: true
    sum :total_likes, :posts, :likes, public?: true
    avg :avg_likes, :posts, :likes, public?: true
    min :least_likes, :posts, :likes, public?: true
    max :most_likes, :posts, :likes, public?: true
    exists :has_posts, :posts, public?: true

    first :most_liked_title, :posts, :title do
      sort likes: :desc
      public? true
    end

    first :latest_title, :posts, :title do
      sort published_on: :desc
      public? true
    end

    list :titles, :posts, :title do
      sort title: :asc
      public? true
    end

    count :popular_post_count, :posts do
      filter expr(likes >= 10)
      public? true
    end

    count :recent_post_count, :posts do
      filter expr(published_on >= ^~D[2024-01-01])
      public? true
    end

    # over the posts the :hidden read action returns (its modify_query hook reads none)
    count :hidden_post_count, :posts do
      read_action :hidden
      public? true
    end

    # unrelated aggregates: over every post, whoever wrote it, whose title is the author's name
    count :namesake_post_count, AshApp.Post do
      filter expr(title == parent(name))
      public? true
    end

    sum :namesake_likes, AshApp.Post, :likes do
      filter expr(title == parent(name))
      public? true
    end

    exists :has_namesake_post, AshApp.Post do
      filter expr(title == parent(name))
      public? true
    end
  end

  actions do
    defaults [:read, :destroy]

    create :create do
      primary? true
      accept [:id, :name, :email, :nickname, :score, :born_on, :rating]
    end

    create :upsert_by_email do
      accept [:name, :email, :score]
      upsert? true
      upsert_identity :unique_email
      upsert_fields [:name, :score]
    end

    update :update do
      primary? true
      accept [:name, :email, :nickname, :score, :born_on, :rating, :posts_written]
    end

    update :update_locked do
      accept [:name, :score]
      change optimistic_lock(:version)
    end
  end
end
